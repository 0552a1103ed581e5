"""pyro-vae: a variational autoencoder in Pyro whose math is hand-derived and checked against Pyro itself.

    import pyro_vae
    run = pyro_vae.train(pyro_vae.TrainConfig(epochs=5, out="runs/quick"))   # a TrainedRun
    run = pyro_vae.load_run("runs/quick")                                    # the same, from its folder
    run = pyro_vae.resume("runs/quick", epochs=10)                           # on to epoch 10, exactly
    run.evaluate(samples=1000); run.sample(16); run.reconstruct([0, 1]); run.interpolate(0, 1)

Your own parts: `train(config, data=(train, test), encoder=..., decoder=...)` or `guide=...`; see
`core.parts` and `core.guides.Guide`, and docs/own-model.md. Your own Pyro program: `train(config,
model=vae.model, guide=vae.guide)` (`Program`; docs/own-program.md); the literature's, by name:
`TrainConfig(program="m2")` or `"cvae"` (`core.programs`).

The package follows the flow: `core` (math, networks, guides, model, estimators) -> `data` ->
`evaluation` -> `training` (config, inputs, objective, build, run, step, epoch, loop; checkpoint/, report/)
-> `experiments` -> `cli` (docs/layout.md draws it, with the path of a training step).
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the names below, for readers and type checkers; at run time they load on first use
    from pyro_vae.core.guides import Guide
    from pyro_vae.core.model import VAE
    from pyro_vae.core.model_config import ModelConfig
    from pyro_vae.core.program import Program
    from pyro_vae.data import Dataset, from_arrays
    from pyro_vae.errors import ConfigError, DataError, PyroVAEError
    from pyro_vae.evaluation.likelihood import LogLikelihood, log_likelihood, negative_elbo
    from pyro_vae.training.config import TrainConfig
    from pyro_vae.training.loop import resume, train
    from pyro_vae.training.step import Batch, svi_step
    from pyro_vae.training.trained_run import Evaluation, TrainedRun, load_run

# Each public name's module, imported on first use (PEP 562): `import pyro_vae` (and a command's start-up,
# which Ctrl-C may interrupt) costs nothing until PyTorch is needed.
_PUBLIC = {
    "Guide": "pyro_vae.core.guides",
    "VAE": "pyro_vae.core.model",
    "ModelConfig": "pyro_vae.core.model_config",
    "Program": "pyro_vae.core.program",
    "Dataset": "pyro_vae.data",
    "from_arrays": "pyro_vae.data",
    "ConfigError": "pyro_vae.errors",
    "DataError": "pyro_vae.errors",
    "PyroVAEError": "pyro_vae.errors",
    "LogLikelihood": "pyro_vae.evaluation.likelihood",
    "log_likelihood": "pyro_vae.evaluation.likelihood",
    "negative_elbo": "pyro_vae.evaluation.likelihood",
    "TrainConfig": "pyro_vae.training.config",
    "resume": "pyro_vae.training.loop",
    "train": "pyro_vae.training.loop",
    "Batch": "pyro_vae.training.step",
    "svi_step": "pyro_vae.training.step",
    "Evaluation": "pyro_vae.training.trained_run",
    "TrainedRun": "pyro_vae.training.trained_run",
    "load_run": "pyro_vae.training.trained_run",
}


def __getattr__(name: str) -> object:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pyro_vae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})


__version__ = "0.1.0"
__all__ = [
    "Batch",
    "ConfigError",
    "DataError",
    "Dataset",
    "Evaluation",
    "Guide",
    "LogLikelihood",
    "ModelConfig",
    "Program",
    "PyroVAEError",
    "TrainConfig",
    "TrainedRun",
    "VAE",
    "from_arrays",
    "load_run",
    "log_likelihood",
    "negative_elbo",
    "resume",
    "svi_step",
    "train",
]
