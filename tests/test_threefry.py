"""The compiled step's binarization draw (`pyro_vae.data.threefry`): the Threefry-2x32-20 cipher against the
known-answer vectors of its authors' Random123 library and, where JAX is installed, against JAX's own
`threefry_2x32`; the Bernoulli draw's frequencies; the fused kernel against the same operations run eagerly;
and the training runs that use it (compiled on a CPU)."""

import numpy as np
import pytest
import torch

import pyro_vae
from pyro_vae import data
from pyro_vae.data import threefry
from pyro_vae.errors import DataError
from pyro_vae.training.checkpoint import store

WORD = 2**32 - 1
KNOWN_ANSWERS = [  # Random123's kat_vectors, threefry2x32_20: counter, key, enciphered counter
    ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
    ((WORD, WORD), (WORD, WORD), (0x1CB996FC, 0xBB002BE7)),
    ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("counter, key, expected", KNOWN_ANSWERS)
def test_the_cipher_gives_random123s_known_answers(counter, key, expected):
    words = lambda pair: tuple(torch.tensor([value]) for value in pair)  # noqa: E731
    assert tuple(int(w) % 2**32 for w in threefry.threefry2x32(words(key), words(counter))) == expected


@pytest.mark.parametrize("n", [1, 2, 999, 1000])
def test_the_words_are_jaxs_threefry_of_the_counters_0_to_n(n):
    jax_random = pytest.importorskip("jax.extend.random", reason="JAX is in the peers extra")
    jnp = pytest.importorskip("jax.numpy")
    key = (0x9E3779B9, 0x7F4A7C15)
    theirs = np.asarray(jax_random.threefry_2x32(jnp.array(key, dtype=jnp.uint32), jnp.arange(n, dtype=jnp.uint32)))
    ours = threefry.cipher_words(torch.tensor(key), n).to(torch.int64) & WORD
    assert ours.tolist() == theirs.astype(np.int64).tolist()


def test_the_words_are_int32_bit_patterns_whose_top_bits_vary():
    """Every word is an int32 (its additions wrap as the cipher's), and both signs occur: the top bit, which the
    draw's uniform reads first, is set in about half of the words."""
    words = threefry.cipher_words(torch.tensor([WORD, WORD]), 10_001)
    top = (words < 0).double().mean()
    assert words.dtype == torch.int32 and abs(float(top) - 0.5) <= 5 * (0.25 / words.numel()) ** 0.5


def test_the_pixels_of_8_bit_images_keep_their_frequency():
    """Each grey level k/255 is drawn 1 at rate k/255, within 5 standard errors; 0 never, 1 always."""
    levels = torch.arange(256, dtype=torch.float32) / 255
    x = levels.repeat(4000, 1)
    ones = threefry.bernoulli_threefry(x, torch.tensor([3, 4])).mean(0)
    se = (levels * (1 - levels) / 4000).sqrt()
    assert ((ones - levels).abs() <= 5 * se).all()


def test_neighbouring_pixels_are_uncorrelated():
    """x = 1/2 everywhere: the correlation of pixel i and pixel i + 1 (and of the two words of a pair) is
    within 5 standard errors (1/sqrt(n)) of 0."""
    draw = threefry.bernoulli_threefry(torch.full((1001, 784), 0.5), torch.tensor([5, 6])).flatten() - 0.5
    for a, b in [(draw[:-1], draw[1:]), (draw[: draw.numel() // 2], draw[(draw.numel() + 1) // 2 :])]:
        correlation = float((a * b).mean() / 0.25)
        assert abs(correlation) <= 5 / a.numel() ** 0.5


def test_a_batch_past_the_counters_is_refused_in_one_line():
    huge = torch.zeros(1).expand(2**15, 2**16)  # a view: no memory
    with pytest.raises(DataError, match=r"^a batch of 2147483648 pixels is more than the draw's 2\^31 counters"):
        data.binarize_fused(huge)


@pytest.mark.parametrize("shape", [(37, 784), (7,), (1001,)])
def test_the_fused_kernel_draws_what_the_operations_draw_eagerly(shape):
    """Also where the kernel's vectorized loop leaves a tail (int32 words wrap around there as well)."""
    x, key = torch.rand(shape), torch.tensor([7, 2**32 - 8])
    assert torch.equal(threefry.fused_bernoulli()(x, key), threefry.bernoulli_threefry(x, key))


def test_the_key_comes_from_the_generator_so_a_seed_repeats_the_draw():
    x = torch.rand(64, 784)
    first = data.binarize_fused(x, torch.Generator().manual_seed(9))
    assert torch.equal(first, data.binarize_fused(x, torch.Generator().manual_seed(9)))
    assert not torch.equal(first, data.binarize_fused(x, torch.Generator().manual_seed(10)))


def run_state(out, **settings) -> dict:
    config = pyro_vae.TrainConfig(epochs=2, batch_size=256, out=str(out), checkpoint_every=1, **settings)
    pyro_vae.train(config, progress=False, log=lambda line: None)
    return store.load(out / "checkpoint.pt").model_state


def test_a_compiled_run_on_a_cpu_binarizes_with_threefry_and_resumes_exactly(tmp_path, monkeypatch):
    """The run's draw is the fused one under inductor on a CPU (and torch.bernoulli's on the graph backend,
    which stays the eager step bit for bit); stopped after one epoch and resumed, it ends where an unbroken
    run ends."""
    calls = []
    fused = data.binarize_fused
    monkeypatch.setattr(data, "binarize_fused", lambda x: calls.append(x.shape) or fused(x))
    whole = run_state(tmp_path / "whole", compile=True)
    assert calls
    config = pyro_vae.TrainConfig(epochs=1, batch_size=256, out=str(tmp_path / "part"), compile=True)
    pyro_vae.train(config, progress=False, log=lambda line: None)
    pyro_vae.resume(tmp_path / "part", epochs=2, progress=False, log=lambda line: None)
    part = store.load(tmp_path / "part" / "checkpoint.pt").model_state
    assert all(torch.equal(whole[k], part[k]) for k in whole)
