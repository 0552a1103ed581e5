"""ModelConfig: the architecture of the VAE (networks, latent sizes, likelihood, variational family), each
setting declared once with its help, choices and range."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyro_vae.core.guides import GUIDES
from pyro_vae.core.networks import ACTIVATIONS, NETWORKS
from pyro_vae.core.priors import PRIORS
from pyro_vae.errors import ConfigError
from pyro_vae.settings import check_declared, setting

LIKELIHOODS = ("bernoulli", "continuous-bernoulli", "gaussian")

MAX_UNITS = 100_000  # the widest layer a config may ask for


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the VAE. Defaults follow Pyro's VAE tutorial: 784-400-50, softplus. Each field is
    declared once (`settings.setting`): its help, choices and range (the commands make their flags from it)."""

    x_dim: int = setting(784, "pixels per image (set from the data by training)", derived=True, low=1, high=100_000_000)
    hidden: tuple[int, ...] = setting(
        (400,), "encoder hidden sizes, e.g. 400 or 200,200; the decoder mirrors them", low=1,
        high=MAX_UNITS,
    )  # fmt: skip
    network: str = setting(
        "mlp", "the encoder and decoder: mlp (fully connected, @hidden) or conv (4x4 convolutions of stride 2 "
        "with @channels maps, then transposed convolutions back; any image shape)", choices=NETWORKS,
    )  # fmt: skip
    channels: tuple[int, ...] = setting(
        (32, 64), "@network conv: feature maps of each convolution, each halving the image",
        low=1, high=MAX_UNITS,
    )  # fmt: skip
    z_dim: int = setting(50, "latent size", low=1, high=MAX_UNITS)
    activation: str = setting("softplus", "the networks' nonlinearity", choices=tuple(ACTIVATIONS))
    likelihood: str = setting("bernoulli", "p(x|z)", choices=LIKELIHOODS)
    sigma: float = setting(
        0.1, "pixel noise of the Gaussian likelihood, its initial value with @learn_sigma",
        low=1e-6, high=1e6,
    )  # fmt: skip
    learn_sigma: bool = setting(False, "learn the Gaussian likelihood's sigma")
    guide: str = setting(
        "diagonal", "variational family q(z|x): diagonal or full-covariance Gaussian, an inverse-autoregressive "
        "flow, local: free parameters per data point, no encoder, on a fixed subset of @local_points images, or "
        "delta: a point mass at the encoder's output, an autoencoder's deterministic code",
        choices=tuple(GUIDES),
    )  # fmt: skip
    flow_layers: int = setting(2, "inverse-autoregressive layers of @guide flow", low=1, high=64)
    local_points: int = setting(
        1000, "@guide local: train on a fixed subset of this many training images, and evaluate on as many test "
        "images (or all, if fewer), each with its own q", low=1, high=10_000_000,
    )  # fmt: skip
    local_test_points: int = setting(
        0, "local guide: test images with their own q (set from the data by training)", derived=True,
        low=0, high=10_000_000,
    )  # fmt: skip
    prior: str = setting(
        "normal", "p(z): normal, N(0, I); mog, a mixture of @prior_components diagonal Gaussians, learned; vamp, "
        "the VampPrior (1/K) sum_k q(z|u_k) at K = @prior_components learned pseudo-inputs (the diagonal guide's); "
        "with @stochastic_layers 2, the prior of z2",
        choices=PRIORS,
    )  # fmt: skip
    prior_components: int = setting(
        500, "@prior mog or vamp: K, the mixture's components (vamp's pseudo-inputs)", low=1, high=100_000
    )
    stochastic_layers: int = setting(
        1, "1: z ~ N(0, I); 2: z2 ~ N(0, I) above z1 (@z_dim), with p(z1|z2) and q(z2|z1) Gaussian MLPs through "
        "@hidden2 (the IWAE paper's two-layer model)", choices=(1, 2),
    )  # fmt: skip
    z2_dim: int = setting(50, "@stochastic_layers 2: size of the top latent z2", low=1, high=MAX_UNITS)
    hidden2: tuple[int, ...] = setting(
        (100, 100), "@stochastic_layers 2: hidden sizes of q(z2|z1); p(z1|z2) mirrors them", low=1,
        high=MAX_UNITS,
    )  # fmt: skip
    image_shape: tuple[int, ...] = setting(
        (), "(H, W) or (C, H, W), set from the data by training; () is (x_dim,)", derived=True, low=1
    )
    user_parts: str = setting(
        "", "the user's own modules by class (see VAE), or own program by its functions, or none", derived=True
    )

    def __post_init__(self) -> None:
        for name in ("hidden", "channels", "hidden2", "image_shape"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        check_declared(self)
        if self.learn_sigma and self.likelihood != "gaussian":
            raise ConfigError("@learn_sigma applies only to @likelihood gaussian")
        if self.guide == "flow" and self.network == "mlp" and not self.hidden and not self.user_parts:
            raise ConfigError("the flow guide conditions on the encoder's hidden layer; give @hidden")
        if self.prior == "vamp" and self.guide != "diagonal":
            raise ConfigError(
                f"@prior vamp is the mixture of the diagonal guide's q(z|u) at its pseudo-inputs; @guide "
                f"{self.guide} is not that guide: use @guide diagonal, or @prior mog"
            )
        if self.stochastic_layers == 2 and self.guide in ("local", "delta"):
            raise ConfigError(
                f"@stochastic_layers 2 needs a density q(z1|x) from an encoder; @guide {self.guide} has none"
            )
        self._check_image_shape()

    def _check_image_shape(self) -> None:
        """An image shape that holds x_dim pixels and that the convolutions can halve."""
        if self.image_shape and (len(self.image_shape) > 3 or math.prod(self.image_shape) != self.x_dim):
            raise ConfigError(f"image shape {self.image_shape} does not hold x_dim = {self.x_dim} pixels")
        if self.network == "conv" and self.image_shape:  # () until training sets it from the data
            if len(self.image_shape) not in (2, 3):
                raise ConfigError(f"@network conv needs images of shape (H, W) or (C, H, W), got {self.shape}")
            if not 1 <= len(self.channels) <= 8 or min(self.image_shape[-2:]) < 2 ** len(self.channels):
                raise ConfigError(
                    f"@network conv halves the image once per entry of @channels {self.channels}: "
                    f"{len(self.channels)} halvings need sides of at least {2 ** len(self.channels)} pixels, "
                    f"and the images are {self.shape}"
                )

    @property
    def is_program(self) -> bool:
        """Whether the run trains the user's own Pyro program (`core.program.Program`), not this VAE: then only
        the data's shape (x_dim, image_shape) applies."""
        return "model=" in self.user_parts

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one image: image_shape, or (x_dim,) for rows of pixels of no known shape."""
        return self.image_shape or (self.x_dim,)
