"""The binarization's CPU draw (`pyro_vae.data.bernoulli_draw`) against `torch.bernoulli`: the same pixels
bit for bit and the same generator state after them, from any position of the generator's state."""

import pytest
import torch

from pyro_vae import data
from pyro_vae.data import bernoulli_draw


def test_the_fast_draw_is_available_on_this_machine():
    assert bernoulli_draw.fast_draw_available()


@pytest.mark.parametrize("seed", [0, 1, 2**31 + 7])
@pytest.mark.parametrize("already_drawn", [0, 1, 623, 624, 625, 1000])
@pytest.mark.parametrize("pixels", [1, 623, 624, 625, 256 * 784])
def test_the_draw_and_the_state_after_it_equal_torch_bernoulli(seed, already_drawn, pixels):
    """From a fresh seed, mid-block and at a block's end (624 outputs a block), across one twist or many."""
    x = torch.rand(pixels, generator=torch.Generator().manual_seed(seed + 1))
    x[: min(pixels, 2)] = torch.tensor([0.0, 1.0])[: min(pixels, 2)]  # the edges: never and always
    ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    torch.rand(already_drawn, generator=ours), torch.rand(already_drawn, generator=theirs)
    assert torch.equal(bernoulli_draw.bernoulli(x, ours), torch.bernoulli(x, generator=theirs))
    assert torch.equal(ours.get_state(), theirs.get_state())
    assert torch.equal(torch.randn(5, generator=ours), torch.randn(5, generator=theirs))


def test_the_global_generator_advances_as_torch_bernoulli_leaves_it():
    x = torch.rand(37, 28, 28)
    torch.manual_seed(11)
    ours = data.binarize(x)
    after = torch.get_rng_state()
    torch.manual_seed(11)
    assert torch.equal(ours, torch.bernoulli(x))
    assert torch.equal(after, torch.get_rng_state())


def test_the_pixels_of_8_bit_images_keep_their_frequency():
    """Each grey level k/255 of an MNIST-like batch is drawn 1 at rate k/255, within 5 standard errors."""
    levels = torch.arange(256, dtype=torch.float32) / 255
    x = levels.repeat(4000, 1)
    ones = data.binarize(x, torch.Generator().manual_seed(0)).mean(0)
    se = (levels * (1 - levels) / 4000).sqrt()
    assert ((ones - levels).abs() <= 5 * se + 1e-12).all()


@pytest.mark.parametrize(
    "x",
    [
        torch.rand(64, 784, dtype=torch.float64),  # not float32
        torch.rand(784, 64).t(),  # not contiguous: torch.bernoulli's own order
        torch.rand(0, 784),  # empty
    ],
    ids=["float64", "transposed", "empty"],
)
def test_what_the_fast_path_does_not_cover_is_torch_bernoulli(x):
    ours, theirs = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(bernoulli_draw.bernoulli(x, ours), torch.bernoulli(x, generator=theirs))
    assert torch.equal(ours.get_state(), theirs.get_state())


def test_a_generator_state_of_another_layout_falls_back(monkeypatch):
    monkeypatch.setattr(bernoulli_draw, "STATE_BYTES", bernoulli_draw.STATE_BYTES + 8)
    bernoulli_draw.fast_draw_available.cache_clear()
    try:
        assert not bernoulli_draw.fast_draw_available()
        x = torch.rand(100, 784)
        ours, theirs = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
        assert torch.equal(bernoulli_draw.bernoulli(x, ours), torch.bernoulli(x, generator=theirs))
    finally:
        monkeypatch.undo()
        bernoulli_draw.fast_draw_available.cache_clear()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_draw_is_torch_bernoulli():
    x = torch.rand(64, 784, device="cuda")
    torch.cuda.manual_seed(5)
    ours = bernoulli_draw.bernoulli(x)
    torch.cuda.manual_seed(5)
    assert torch.equal(ours, torch.bernoulli(x))
