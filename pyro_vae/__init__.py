"""pyro-vae: a variational autoencoder in Pyro whose math is hand-derived and checked against Pyro itself.

import pyro_vae
run = pyro_vae.train(pyro_vae.TrainConfig(epochs=5, out="runs/quick"))   # a TrainedRun
run = pyro_vae.load_run("runs/quick")                                    # the same, from its folder
run.evaluate(samples=1000); run.sample(16); run.reconstruct([0, 1]); run.interpolate(0, 1)
"""

from pyro_vae.core.model import VAE, ModelConfig
from pyro_vae.errors import ConfigError, DataError, PyroVAEError
from pyro_vae.evaluation.likelihood import LogLikelihood, log_likelihood, negative_elbo
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.loop import train
from pyro_vae.training.trained_run import Evaluation, TrainedRun, load_run

__version__ = "0.1.0"
__all__ = [
    "ConfigError",
    "DataError",
    "Evaluation",
    "LogLikelihood",
    "ModelConfig",
    "PyroVAEError",
    "TrainConfig",
    "TrainedRun",
    "VAE",
    "load_run",
    "log_likelihood",
    "negative_elbo",
    "train",
]
