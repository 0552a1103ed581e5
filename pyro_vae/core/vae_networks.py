"""The built-in VAE's networks as its config makes them: the decoder, the encoder's body and the guide q(z|x)
on it (or the user's encoder or guide in their place, see `parts`)."""

from __future__ import annotations

from torch import nn

from pyro_vae.core import guides, parts
from pyro_vae.core.guides import build_guide
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.core.networks import ConvBody, ConvDecoder, Decoder, mlp
from pyro_vae.errors import ConfigError


def build_decoder(config: ModelConfig) -> nn.Module:
    """The built-in decoder: the MLP mirroring the encoder, or the transposed convolutions."""
    if config.network == "conv":
        if not config.image_shape:
            raise ConfigError("@network conv needs the images' shape: ModelConfig(image_shape=(C, H, W) or (H, W))")
        return ConvDecoder(config.z_dim, config.image_shape, config.channels, config.activation)
    return Decoder(config.z_dim, config.hidden, config.x_dim, config.activation)


def build_q(config: ModelConfig, encoder: nn.Module | None, guide: nn.Module | None) -> nn.Module:
    """q(z|x): the user's guide; the diagonal Gaussian on the user's encoder; or the built-in guide
    `config.guide` on the built-in encoder body (an MLP, or convolutions)."""
    if guide is not None:
        if encoder is not None:
            raise ConfigError("give an encoder or a guide, not both: a guide holds its own encoder")
        parts.check_guide(guide)
        return guide
    if encoder is not None:
        if config.guide != "diagonal":
            raise ConfigError(
                f"your encoder gives (loc, scale): it makes the diagonal guide, not @guide {config.guide}; "
                "for another family write a guide (guides.Guide) and pass guide=..."
            )
        return guides.DiagonalNormal(parts.ImageEncoder(encoder, config.shape, config.z_dim))
    body, features = encoder_body(config) if config.guide != "local" else (None, 0)
    rows = config.local_points + config.local_test_points
    return build_guide(config.guide, body, features, config.z_dim, config.flow_layers, rows)


def encoder_body(config: ModelConfig) -> tuple[nn.Module, int]:
    """x -> features h(x) of the built-in encoder, and their number: the MLP's last hidden layer (x itself
    without hidden layers), or the convolutions' flattened maps."""
    if config.network == "conv":
        body = ConvBody(config.image_shape, config.channels, config.activation)
        return body, body.features
    return mlp([config.x_dim, *config.hidden], config.activation), (
        config.hidden[-1] if config.hidden else config.x_dim
    )
