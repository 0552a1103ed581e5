"""x_bin ~ Bernoulli(x) drawn on a CPU exactly as `torch.bernoulli(x)` draws it, bit for bit and leaving the
generator in the same state, in about half its time: the batch's dynamic binarization, every training step.

PyTorch's CPU generator is a Mersenne Twister (MT19937). For float32 pixels, `torch.bernoulli` takes one
32-bit output r_i of it per pixel, in memory order, and sets

    u_i = (r_i mod 2^24) / 2^24,        x_bin_i = 1 if u_i < x_i else 0,

one output at a time (about 15 ns a pixel on the development CPU, more than the encoder's first GEMM per
batch). NumPy's `MT19937` is the same generator with a vectorized raw output: the generator's state is copied
into it, the n outputs drawn there, the advanced state copied back, and the comparison made as one tensor
operation, u_i < x_i  <=>  (r_i mod 2^24) < 2^24 x_i (both sides exact in float32).

The copy reads PyTorch's serialized CPU generator state (ATen's `CPUGeneratorImplState`: `left` at byte 8,
`next` at byte 16, the 624 state words as uint64 from byte 24). `fast_draw_available` checks, once a process,
that the state has that size and that a draw across a twist of the state equals `torch.bernoulli`'s; where it
does not (another PyTorch, a big-endian machine), or for a tensor this path does not cover (not a contiguous
float32 tensor on the CPU), `bernoulli` is `torch.bernoulli` itself.
"""

from __future__ import annotations

import sys
import threading
from functools import cache

import numpy as np
import torch

STATE_BYTES = 5056  # sizeof(CPUGeneratorImplState)
STATE_WORDS = 624  # MT19937's state: 624 32-bit words, stored as uint64
LEFT, NEXT, KEY = slice(8, 12), slice(16, 24), slice(24, 24 + 8 * STATE_WORDS)
UNIFORM_BITS = 24  # a float32 uniform keeps the low 24 bits of one output
THREAD = threading.local()


def bernoulli(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x_bin ~ Bernoulli(x): `torch.bernoulli(x, generator=generator)`, bit for bit, the same generator state
    after it; on a CPU through NumPy's vectorized MT19937 where `fast_draw_available`."""
    if not (x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous() and x.numel()):
        return torch.bernoulli(x, generator=generator)
    if not fast_draw_available():
        return torch.bernoulli(x, generator=generator)
    return twister_draw(x, generator or torch.default_generator)


def twister_draw(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The n = x.numel() outputs r_i of `generator`'s MT19937 drawn by NumPy's, and 1 where (r_i mod 2^24) < 2^24 x_i."""
    state = generator.get_state().numpy().copy()
    twister = numpy_twister()
    twister.state = {"bit_generator": "MT19937", "state": numpy_state(state)}
    raw = twister.random_raw(x.numel())
    put_numpy_state(state, twister.state["state"])
    generator.set_state(torch.from_numpy(state))
    low_words = raw.view(np.uint32)[::2]  # each output is a uint64 holding 32 bits: its low half (little-endian)
    u = np.bitwise_and(low_words, np.uint32(2**UNIFORM_BITS - 1), dtype=np.uint32).view(np.int32)
    return torch.lt(torch.from_numpy(u).view(x.shape), x.mul(2.0**UNIFORM_BITS), out=torch.empty_like(x))


def numpy_twister() -> np.random.MT19937:
    """This thread's NumPy MT19937 (made once: seeding one costs more than a batch's comparison); its state
    is overwritten before every draw."""
    if not hasattr(THREAD, "twister"):
        THREAD.twister = np.random.MT19937(0)
    return THREAD.twister


def numpy_state(state: np.ndarray) -> dict:
    """PyTorch's MT19937 position as NumPy's: `next` words used, or all 624 (a twist due) when `left` is 1."""
    left, used = int(state[LEFT].view(np.int32)[0]), int(state[NEXT].view(np.uint64)[0])
    return {"key": state[KEY].view(np.uint64).astype(np.uint32), "pos": STATE_WORDS if left == 1 else used}


def put_numpy_state(state: np.ndarray, after: dict) -> None:
    """NumPy's MT19937 state written back into PyTorch's serialized one (left = 625 - next, as ATen counts)."""
    state[KEY].view(np.uint64)[:] = after["key"]
    state[NEXT].view(np.uint64)[0] = after["pos"]
    state[LEFT].view(np.int32)[0] = STATE_WORDS + 1 - after["pos"]


@cache
def fast_draw_available() -> bool:
    """Whether `twister_draw` reproduces `torch.bernoulli` here: the state's layout, and a draw of 1,500 pixels
    from a fresh seed, then across the next twist, equal with the generator's state after them."""
    if sys.byteorder != "little" or torch.Generator().get_state().numel() != STATE_BYTES:
        return False
    x = torch.rand(1500, generator=torch.Generator().manual_seed(1))
    ours, theirs = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    try:
        same = all(torch.equal(twister_draw(x, ours), torch.bernoulli(x, generator=theirs)) for _ in range(2))
    except (RuntimeError, ValueError, TypeError):  # a state PyTorch or NumPy refuses: another layout
        return False
    return same and torch.equal(ours.get_state(), theirs.get_state())
