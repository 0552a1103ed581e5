"""How much memory a request needs, about, and how much the machine has: so that a batch, a number of
particles or an evaluation chunk that cannot fit is refused in one line before anything is allocated, instead
of ending in an allocator's traceback (or the kernel's out-of-memory killer) minutes later.

The estimate counts what one (image, sample) row keeps for the backward pass through the MLPs,

    bytes per row ~ 4 (3 x_dim + 4 sum(hidden) + 6 z_dim)     (float32; twice that in float64),

about 17 KB for the default 784-400-50 VAE (measured: 17.3 KB per row at batch 256 and K = 200, peak resident
memory, for trace and iwae alike), and without a backward pass (evaluation) 4 (2 x_dim + sum(hidden) + 2 z_dim),
8.3 KB (measured: 6.6 KB per row of importance sampling). Convolutions are not counted.
"""

from __future__ import annotations

import os

import torch

from pyro_vae.errors import ConfigError


def bytes_per_row(model, element_size: int = 4, backward: bool = True) -> int:
    """About the bytes one (image, sample) row of a step (or, without `backward`, of an evaluation) holds at
    once (see above), for a `ModelConfig` (with two stochastic layers, the second layer's sizes count too)."""
    two = model.stochastic_layers == 2
    hidden = sum(model.hidden) + (sum(model.hidden2) if two else 0)
    z_dim = model.z_dim + (model.z2_dim if two else 0)
    if not backward:
        return element_size * (2 * model.x_dim + hidden + 2 * z_dim)
    return element_size * (3 * model.x_dim + 4 * hidden + 6 * z_dim)


def step_bytes(model, rows: int, parameters: int) -> int:
    """About the bytes a training step holds at once: each of the `parameters` with its gradient and Adam's
    two moments (16 bytes in float32), and `rows` (image, sample) rows through the networks of `model`."""
    return 16 * parameters + rows * bytes_per_row(model)


LIMIT_ENV = "PYRO_VAE_MEMORY_LIMIT"  # bytes (or with K, M, G: KiB, MiB, GiB) pyro-vae may count on, at most


def available_bytes(device: torch.device | str = "cpu") -> int:
    """The memory free for this process: on a GPU the device's free memory, else the system's available
    memory (MemAvailable of /proc/meminfo; without it, all physical memory); at most $PYRO_VAE_MEMORY_LIMIT."""
    device = torch.device(device)
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else system_available_bytes()
    limit = os.environ.get(LIMIT_ENV)
    return free if not limit else min(free, parse_bytes(limit))


def parse_bytes(text: str) -> int:
    """A size as $PYRO_VAE_MEMORY_LIMIT gives it: a whole number of bytes, or of KiB, MiB, GiB with K, M, G."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    number, unit = (text[:-1], units[text[-1].upper()]) if text and text[-1].upper() in units else (text, 1)
    try:
        return int(float(number) * unit)
    except ValueError:
        raise ConfigError(f"${LIMIT_ENV} is {text!r}; give a size such as 2000000000, 500M or 4G") from None


def system_available_bytes() -> int:
    """MemAvailable of /proc/meminfo; without it, all physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fits(needed: int, device: torch.device | str = "cpu") -> bool:
    """Whether `needed` bytes fit in the memory available on `device`."""
    return needed <= available_bytes(device)


def check_fits(needed: int, request: str, advice: str, device: torch.device | str = "cpu") -> None:
    """Refuse, in one line, a `request` (its settings marked @name) whose estimate `needed` exceeds the memory
    available on `device`."""
    available = available_bytes(device)
    if needed > available:
        raise ConfigError(
            f"{request} needs about {gigabytes(needed)} of memory at once, and {gigabytes(available)} is "
            f"available{' on the GPU' if torch.device(device).type == 'cuda' else ''}; {advice}"
        )


def gigabytes(count: int) -> str:
    """A size in GiB, or in MiB below one GiB."""
    return f"{count / 2**30:,.1f} GiB" if count >= 2**30 else f"{count / 2**20:,.1f} MiB"
