"""The literature's VAEs written as Pyro programs, as a user would write them, for `train(config, model=...,
guide=...)`, and the registry that trains them by name (`TrainConfig(program=...)`, `--program`):
`m2.SemiSupervisedVAE` (Kingma et al. 2014's M2, its label enumerated) and `cvae.ConditionalVAE` (Sohn et
al. 2015's conditional VAE, completing images from given quadrants)."""

from __future__ import annotations

import torch

from pyro_vae.core.parts import Parts
from pyro_vae.core.programs.cvae import ConditionalVAE
from pyro_vae.core.programs.m2 import SemiSupervisedVAE
from pyro_vae.errors import ConfigError

PROGRAMS = {"m2": SemiSupervisedVAE, "cvae": ConditionalVAE}  # by name; "vae" is the built-in VAE (ModelConfig)


def program_parts(name: str, given: Parts, pixels: int, seed: int, options: dict | None = None) -> Parts:
    """The parts a run of `TrainConfig(program=name)` trains: the user's own (`given`) for the built-in VAE
    ("vae"), or the registered program `name` (`registered_parts`), with which no part of the user's goes."""
    if name == "vae":
        return given
    if given.description():
        raise ConfigError(f"@program {name} is built in: give it no model, guide, encoder or decoder of yours")
    return registered_parts(name, pixels, seed, options)


def registered_parts(name: str, pixels: int, seed: int, options: dict | None = None) -> Parts:
    """The program `name` for images of `pixels` pixels, built with `options` (`TrainConfig.program_options`:
    the CVAE's quadrants, M2's auxiliary weight), its first weights drawn from `seed` (the global random state
    untouched), as the parts a run trains: its model and guide."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        try:
            module = PROGRAMS[name](pixels=pixels, **(options or {}))
        except ValueError as error:
            raise ConfigError(f"@program {name}: {error}") from None
    return Parts(model=module.model, guide=module.guide)
