"""x_bin ~ Bernoulli(x) from a counter-based generator, Threefry-2x32 with 20 rounds (Salmon, Moraes, Dror,
Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3"; the generator JAX draws from), written in PyTorch's
integer operations so that inductor fuses the whole draw into one vectorized kernel: the compiled step's
binarization on a CPU (`--compile`), where `torch.bernoulli` draws one Mersenne Twister output at a time.

For a batch of n pixels and a key k = (k0, k1) drawn from PyTorch's generator (so a seed and a resume
reproduce it), the counters 0, 1, ..., n - 1 are enciphered in pairs (j, j + h), h = ceil(n / 2) (the last
pair's second counter 0 when n is odd), and the n words r = (first words of the pairs, then their second
words)[:n], JAX's `threefry_2x32(key, arange(n))` word for word, give

    u_i = (r_i >> 8) / 2^24,        x_bin_i = 1 if u_i < x_i else 0,

i.e. u_i < x_i  <=>  (r_i >> 8) < 2^24 x_i, both sides exact in float32. The words are held as the bit
patterns of int32 tensors, whose additions wrap around mod 2^32 as the cipher's do (16 words to an AVX-512
register, where int64 words with a mask after each operation fit 8 and took 1.5x as long); a right shift of
an int32 copies its sign bit, so each one is masked to the shifted-in zeros a 32-bit word would have.
"""

from __future__ import annotations

from functools import cache
from typing import Callable

import torch

from pyro_vae.errors import DataError

ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)  # Threefry-2x32's rotation constants, round i uses ROTATIONS[i % 8]
PARITY = 0x1BD11BDA  # the key schedule's third word is k0 ^ k1 ^ PARITY
ROUNDS = 20
UNIFORM_BITS = 24


def threefry2x32(key: tuple[torch.Tensor, torch.Tensor], counter: tuple[torch.Tensor, torch.Tensor]):
    """The Threefry-2x32-20 block cipher of `counter` under `key` (integer tensors, taken mod 2^32), as int32
    bit patterns:

        x = counter + (k0, k1);  for round i:  x0 += x1,  x1 = rotl(x1, R_(i mod 8)) ^ x0,
        and after every 4th round s = (i + 1) / 4:  x0 += ks_(s mod 3),  x1 += ks_(s+1 mod 3) + s,

    with the key schedule ks = (k0, k1, k0 ^ k1 ^ PARITY), all sums mod 2^32 (int32's wrap-around)."""
    k0, k1 = (word.to(torch.int32) for word in key)
    schedule = (k0, k1, k0 ^ k1 ^ PARITY)
    x0, x1 = counter[0].to(torch.int32) + schedule[0], counter[1].to(torch.int32) + schedule[1]
    for i in range(ROUNDS):
        x0 = x0 + x1
        x1 = rotate_left(x1, ROTATIONS[i % 8]) ^ x0
        if i % 4 == 3:
            s = i // 4 + 1
            x0 = x0 + schedule[s % 3]
            x1 = x1 + schedule[(s + 1) % 3] + s
    return x0, x1


def rotate_left(x: torch.Tensor, r: int) -> torch.Tensor:
    """The 32-bit word x (int32) rotated left by r: (x << r) | (x >>> (32 - r)), the logical shift as the
    arithmetic one with its copies of the sign bit masked off."""
    return (x << r) | ((x >> (32 - r)) & ((1 << r) - 1))


def bernoulli_threefry(x: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """x_bin ~ Bernoulli(x) from the Threefry words of counters 0 .. n - 1 under `key` (two words)."""
    words = cipher_words(key, x.numel(), x.device).view(x.shape)
    uniform = (words >> (32 - UNIFORM_BITS)) & (2**UNIFORM_BITS - 1)  # the word's top 24 bits
    return torch.lt(uniform.to(torch.float32), x * 2.0**UNIFORM_BITS).to(x.dtype)


def cipher_words(key: torch.Tensor, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """n 32-bit words as int32 bit patterns (in int64, `& (2**32 - 1)` reads them unsigned): counters 0 .. n - 1
    enciphered in pairs (j, j + h), h = ceil(n / 2), the missing last counter 0 when n is odd; the pairs' first
    words, then their second words (n < 2^31, so that every counter is an int32)."""
    half = (n + 1) // 2
    first = torch.arange(half, dtype=torch.int32, device=device)
    second = torch.where(first + half < n, first + half, 0)
    return torch.cat(threefry2x32((key[0], key[1]), (first, second)))[:n]


@cache
def fused_bernoulli() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`bernoulli_threefry` compiled by inductor, one kernel for each shape of batch."""
    return torch.compile(bernoulli_threefry, dynamic=False, fullgraph=True)


def binarize_fused(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x_bin ~ Bernoulli(x): a key of two 32-bit words drawn from `generator` (PyTorch's default one if None),
    then `bernoulli_threefry` in one compiled kernel. A batch of 2^31 pixels or more is refused: its counters
    would pass int32's."""
    if x.numel() >= 2**31:
        raise DataError(f"a batch of {x.numel()} pixels is more than the draw's 2^31 counters; use smaller batches")
    key = torch.randint(0, 2**32, (2,), dtype=torch.int64, generator=generator, device=x.device)
    return fused_bernoulli()(x, key)
