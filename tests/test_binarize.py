"""The eager binarization draw (`data.binarize`) against `torch.bernoulli`: on a CPU the same pixels bit for
bit and the same generator state after them, from any position of the generator's state."""

import pytest
import torch

from pyro_vae import data


@pytest.mark.parametrize("seed", [0, 1, 2**31 + 7])
@pytest.mark.parametrize("already_drawn", [0, 1, 623, 624, 625])
@pytest.mark.parametrize("pixels", [1, 624, 625, 256 * 784])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_draw_and_the_state_after_it_equal_torch_bernoulli(seed, already_drawn, pixels, dtype):
    """From a fresh seed, mid-way through the Mersenne Twister's block of 624 outputs and at its end, across one
    twist or many; 0 and 1 among the pixels."""
    x = torch.rand(pixels, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    x[: min(pixels, 2)] = torch.tensor([0.0, 1.0], dtype=dtype)[: min(pixels, 2)]
    ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    torch.rand(already_drawn, generator=ours), torch.rand(already_drawn, generator=theirs)
    draw = data.binarize(x, ours)
    assert draw.dtype == dtype and torch.equal(draw, torch.bernoulli(x, generator=theirs))
    assert torch.equal(ours.get_state(), theirs.get_state())


@pytest.mark.parametrize(
    "x",
    [torch.rand(37, 28, 28), torch.rand(784, 64).t(), torch.rand(0, 784), torch.rand(64, 784).half()],
    ids=["images", "transposed", "empty", "float16"],
)
def test_the_global_generator_advances_as_torch_bernoulli_leaves_it(x):
    torch.manual_seed(11)
    ours = data.binarize(x)
    after = torch.get_rng_state()
    torch.manual_seed(11)
    assert torch.equal(ours, torch.bernoulli(x))
    assert torch.equal(after, torch.get_rng_state())


def test_the_pixels_of_8_bit_images_keep_their_frequency():
    """Each grey level k/255 of an MNIST-like batch is drawn 1 at rate k/255, within 5 standard errors."""
    levels = torch.arange(256, dtype=torch.float32) / 255
    ones = data.binarize(levels.repeat(4000, 1), torch.Generator().manual_seed(0)).mean(0)
    se = (levels * (1 - levels) / 4000).sqrt()
    assert ((ones - levels).abs() <= 5 * se).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_draw_is_torch_bernoulli():
    x = torch.rand(64, 784, device="cuda")
    torch.cuda.manual_seed(5)
    ours = data.binarize(x)
    torch.cuda.manual_seed(5)
    assert torch.equal(ours, torch.bernoulli(x))
