"""pyro-vae: a variational autoencoder in Pyro whose math is hand-derived and checked against Pyro itself.

    import pyro_vae
    run = pyro_vae.train(pyro_vae.TrainConfig(epochs=5, out="runs/quick"))   # a TrainedRun
    run = pyro_vae.load_run("runs/quick")                                    # the same, from its folder
    run.evaluate(samples=1000); run.sample(16); run.reconstruct([0, 1]); run.interpolate(0, 1)
"""

from .config import TrainConfig
from .errors import ConfigError, DataError, PyroVAEError
from .evaluate import LogLikelihood, log_likelihood, negative_elbo
from .model import VAE, ModelConfig
from .train import train
from .trained_run import Evaluation, TrainedRun, load_run

__version__ = "0.1.0"
__all__ = [
    "ConfigError", "DataError", "Evaluation", "LogLikelihood", "ModelConfig", "PyroVAEError", "TrainConfig",
    "TrainedRun", "VAE", "load_run", "log_likelihood", "negative_elbo", "train",
]
