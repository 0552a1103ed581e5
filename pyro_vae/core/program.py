"""A user's own Pyro program, a model and its guide, as the module the engine trains.

    program = Program(model, guide, config)       model(x), guide(x) (or of images and labels, model(x, y)):
                                                  Pyro functions or modules of the batch
    program.model(x, kl_weight), program.guide(x, kl_weight)     what the estimators call, as the VAE's

The engine's conventions are put around the user's code, never into it:
- losses per image: the whole program is scaled by 1/batch (`poutine.scale`), as the built-in VAE is;
- the KL weight scales every latent site's log-density, in model and guide alike (`LatentScale`), which
  multiplies the ELBO's KL term by it (a weight of 0 masks them out, as the VAE's `kl_weighted` does);
- the parameters are the module's own: every `pyro.param` the program reads (and so every `pyro.module`)
  is served from `Program.params` (`OwnParameters`), found on the program's first run (`discover`); a model
  or guide that is itself a module (a `PyroModule`) is a submodule, with its own parameters, and its
  PyroParams, which Pyro passes through its param store, pass through an empty scope of it on each call.
  Two programs never share state, and the checkpoint (the module's state_dict) holds every parameter.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Callable, Iterator

import pyro
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.distributions import transform_to

from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.core.parts import Parts
from pyro_vae.core.program_checks import check_program
from pyro_vae.errors import ConfigError

ProgramFunction = Callable[..., object]  # a Pyro model or guide: a function (or module) of the batch's tensors


class Program(nn.Module):
    """A user's Pyro `model` and `guide` (functions of the batch, modules, or methods of a module, as Pyro's
    tutorials write `vae.model` and `vae.guide`) with every parameter they read.

    `config` is the data's shape (x_dim, image_shape); `config.user_parts` records the program's functions
    by name, so that a checkpoint asks for them again."""

    is_local = False  # the engine's questions of a VAE, answered for a program: no per-image table,
    is_point_mass = False  # a guide with a density

    def __init__(self, model: ProgramFunction, guide: ProgramFunction, config: ModelConfig):
        super().__init__()
        for name, program in (("model", model), ("guide", guide)):
            if not callable(program):
                raise ConfigError(
                    f"your {name} must be a Pyro program (a function or a module), got a {type(program).__name__}"
                )
        self.user_model, self.user_guide = model, guide  # registered as submodules where they are modules
        owners = [getattr(program, "__self__", None) for program in (model, guide)]  # of methods, as vae.model
        self.owners = nn.ModuleList({id(o): o for o in owners if isinstance(o, nn.Module)}.values())
        self.takes_labels = takes_labels(model, guide)
        self.params = nn.ParameterDict()
        self.constraints: dict[str, constraints.Constraint] = {}
        self.passed: set[str] = set()  # names of the model's and guide's own submodules' parameters
        self.borrowed: set[str] = set()  # pyro.module names of networks that are not submodules
        self.sealed = False
        self.has_pyro_modules = any(isinstance(m, pyro.nn.PyroModule) for m in self.modules())
        self.config = replace(config, user_parts=Parts(guide=guide, model=model).description())

    def run_model(self, *batch: torch.Tensor) -> object:
        """The user's model on the batch, with its parameters served from this module; no scale."""
        with self._own_parameters():
            return self.user_model(*batch)

    def run_guide(self, *batch: torch.Tensor) -> object:
        """The user's guide on the batch, with its parameters served from this module; no scale."""
        with self._own_parameters():
            return self.user_guide(*batch)

    def model(self, x: torch.Tensor, kl_weight: float | torch.Tensor = 1.0, labels: torch.Tensor | None = None) -> None:
        """The user's model per image (scaled by 1/batch), its latent sites weighted by `kl_weight`."""
        with poutine.scale(scale=1.0 / x.shape[0]), LatentScale(kl_weight):
            self.run_model(*self.inputs(x, labels))

    def guide(self, x: torch.Tensor, kl_weight: float | torch.Tensor = 1.0, labels: torch.Tensor | None = None) -> None:
        """The user's guide per image (scaled by 1/batch), its sites weighted by `kl_weight`."""
        with poutine.scale(scale=1.0 / x.shape[0]), LatentScale(kl_weight):
            self.run_guide(*self.inputs(x, labels))

    @torch.no_grad()
    def metrics(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """What the program's module says of itself on these images (its `metrics(x)` or `metrics(x, y)`, as
        M2's test accuracy), where it has such a method; else nothing."""
        found = [owner.metrics for owner in self.owners if callable(getattr(owner, "metrics", None))]
        return {name: float(value) for own in found for name, value in own(*self.inputs(x, labels)).items()}

    def figures(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, tuple[torch.Tensor, int, str]]:
        """The pictures the program's module draws of itself from these test images (its `figures(x)` or
        `figures(x, y)`: file name -> (images in [0, 1], rows, title), as M2's samples of each class), where it
        has such a method; else none."""
        found = [owner.figures for owner in self.owners if callable(getattr(owner, "figures", None))]
        return {name: picture for own in found for name, picture in own(*self.inputs(x, labels)).items()}

    def inputs(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """What the program takes of a batch: (x,), or (x, labels) for a program of images and labels."""
        if not self.takes_labels:
            return (x,)
        if labels is None:
            raise ConfigError("your model and guide take (x, y): give them the images' labels (the data's)")
        return x, labels

    def discover(self, batch: tuple[torch.Tensor, ...], estimator: str | None = None) -> "Program":
        """Run the program once on `batch` (`check_program`, for `estimator`: every refusal before the first
        step), keeping every parameter it reads, then seal: a parameter first read later is refused. The
        draws use generators of their own: the run's random streams are untouched."""
        device = batch[0].device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            check_program(self.run_model, self.run_guide, batch, estimator)
        return self._sealed(device)

    def find_parameters(self, batch: tuple[torch.Tensor, ...]) -> "Program":
        """Run the program once on `batch` without any check (Pyro's validation off: blank images will do),
        to find its parameters and load a checkpoint's values into them; then seal."""
        device = batch[0].device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), pyro.validation_enabled(False):
            trace = poutine.trace(self.run_guide).get_trace(*batch)
            poutine.replay(self.run_model, trace=trace)(*batch)
        return self._sealed(device)

    def _sealed(self, device: torch.device) -> "Program":
        if not any(True for _ in self.parameters()):
            raise ConfigError(
                "your program read no parameter (pyro.param, pyro.module or a PyroModule's): nothing to train"
            )
        self.sealed = True
        return self.to(device)

    def parameter(self, name: str, init: object, constraint: constraints.Constraint) -> torch.Tensor:
        """The value of pyro.param(`name`, `init`, `constraint`): this module's own, made on first use from
        `init`. A network's own nn.Parameter (pyro.module's, or a PyroModule's) is kept as it is, since the
        network computes with it: one of the model's or guide's own submodules passes through untouched (it is
        already this module's), another's is held in `params` and marked borrowed."""
        key = name.replace(".", ":")  # a ParameterDict's keys hold no dots
        if key in self.passed:
            return init
        if key not in self.params:
            if self.sealed:
                raise ConfigError(
                    f"the program read a parameter {name!r} that its first run did not: every parameter must be read "
                    "on every run (the optimizer and the checkpoint hold those of the first)"
                )
            value = init() if callable(init) else torch.as_tensor(init)
            if isinstance(value, nn.Parameter) and constraint is constraints.real:
                if any(value is own for own in self.parameters()):
                    self.passed.add(key)
                    return value
                self.borrowed.add(name.split("$$$")[0])
            else:
                value = nn.Parameter(transform_to(constraint).inv(value).detach().clone())
            self.params[key], self.constraints[key] = value, constraint
        unconstrained = self.params[key]
        return (
            unconstrained
            if self.constraints[key] is constraints.real
            else transform_to(self.constraints[key])(unconstrained)
        )

    def holds(self, name: str) -> bool:
        """Whether pyro.param(`name`) is one of this module's (or one it lets pass)."""
        key = name.replace(".", ":")
        return key in self.params or key in self.passed

    @contextmanager
    def _own_parameters(self) -> Iterator[None]:
        """Every pyro.param served from this module; a PyroModule's PyroParams, which Pyro puts into its param
        store from the module (or takes from there, if the name is found), in an empty scope of that store for
        this call alone: the module's own values are always the ones used. (Only programs with a PyroModule
        need that scope, which copies the store twice a call; others skip it.)"""
        scope = pyro.get_param_store().scope() if self.has_pyro_modules else nullcontext()
        with scope, OwnParameters(self):
            yield


class OwnParameters(Messenger):
    """Serves every pyro.param of the program from its `Program` (and so keeps it out of Pyro's param store);
    one without an initial value that the program does not hold (a PyroModule's PyroParam) goes on to Pyro."""

    def __init__(self, program: Program):
        super().__init__()
        self.program = program

    def _pyro_param(self, msg: dict) -> None:
        name, *init = msg["args"]
        if not init and not self.program.holds(name):
            return
        constraint = msg["kwargs"].get("constraint") or constraints.real
        msg["value"] = self.program.parameter(name, init[0] if init else None, constraint)
        msg["done"] = True


class LatentScale(Messenger):
    """Scales every latent (unobserved) sample site's log-density by the KL weight; a weight of 0 masks them."""

    def __init__(self, kl_weight: float | torch.Tensor):
        super().__init__()
        self.kl_weight = kl_weight

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"]:
            return
        if not isinstance(self.kl_weight, torch.Tensor) and self.kl_weight == 0:
            msg["mask"] = False
        elif isinstance(self.kl_weight, torch.Tensor) or self.kl_weight != 1:
            msg["scale"] = self.kl_weight * msg["scale"]


def takes_labels(model: ProgramFunction, guide: ProgramFunction) -> bool:
    """Whether a program is of images and labels, model(x, y) and guide(x, y) with y required, rather than of
    images, model(x) (further parameters with defaults are left to them): by the required positional
    parameters of its functions (a module's forward), alike in both; more than two refused in one line."""
    counts = []
    for name, program in (("model", model), ("guide", guide)):
        function = program.forward if isinstance(program, nn.Module) else program
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            return False  # no signature to read (a builtin): given the images alone
        required = [
            p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        if len(required) > 2:
            raise ConfigError(
                f"your {name} takes {len(required)} arguments without defaults; a program takes the images, "
                "model(x), or the images and their labels, model(x, y)"
            )
        counts.append(max(1, len(required)))
    if counts[0] != counts[1]:
        raise ConfigError(
            f"your model takes {'(x, y)' if counts[0] == 2 else '(x)'} and your guide "
            f"{'(x, y)' if counts[1] == 2 else '(x)'}: Pyro gives both the same arguments"
        )
    return counts[0] == 2


def built_model(config: ModelConfig, parts: Parts) -> VAE | Program:
    """The model that a run's recorded `config` and the user's `parts` describe, to load a checkpoint into:
    the VAE, or the user's program run once on two blank images to find its parameters."""
    if not parts.is_program:
        return VAE(config, parts.encoder, parts.decoder, parts.guide)
    program = Program(parts.model, parts.guide, config)
    blank = (torch.zeros(2, config.x_dim), torch.zeros(2, dtype=torch.int64))
    return program.find_parameters(blank[: 2 if program.takes_labels else 1])
