"""What a trained VAE draws for a person to look at: prior samples, reconstructions, latent paths.

Every function returns decoder means E[x|z] (rows of pixels in [0, 1]), not Bernoulli draws: the images
a person reads as the model's picture of a digit.
"""

from __future__ import annotations

import torch

from pyro_vae.core.model import VAE


@torch.no_grad()
def prior_samples(vae: VAE, n: int, seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """E[x|z] for n draws z ~ p(z) (N(0, I), or with two layers through p(z1|z2)), from a generator of its own
    seeded with `seed`."""
    generator = torch.Generator(device=device).manual_seed(seed)
    z = vae.prior_from_noise(torch.randn((n, vae.z_dim), generator=generator, device=device))
    return vae.decode_mean(z)


@torch.no_grad()
def reconstructions(vae: VAE, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """E[x|z] at q's location for each image of x (for the local guide, `rows` gives their rows)."""
    return vae.decode_mean(vae.location(x, rows))


@torch.no_grad()
def interpolation(vae: VAE, x: torch.Tensor, rows: torch.Tensor | None = None, steps: int = 10) -> torch.Tensor:
    """E[x|z_t] along the straight line z_t = (1 - t) z_a + t z_b, t = 0, 1/(steps-1), ..., 1, between q's
    locations z_a and z_b of the two images x[0] and x[1]."""
    z_a, z_b = vae.location(x[:2], rows)
    t = torch.linspace(0, 1, steps, device=x.device, dtype=z_a.dtype).unsqueeze(1)
    return vae.decode_mean((1 - t) * z_a + t * z_b)
