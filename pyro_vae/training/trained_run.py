"""A run folder back in Python: what `train()` returns and `load_run(path)` gives back.

run = pyro_vae.load_run("runs/a")              # finished or interrupted, model in eval mode
run.vae, run.config, run.metrics, run.path
run.evaluate(samples=1000)                     # test negative ELBO and log p(x)
run.sample(16); run.reconstruct([0, 1, 2]); run.interpolate(0, 1)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from pyro_vae import data
from pyro_vae.core.model import VAE
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import likelihood as evaluate
from pyro_vae.evaluation import sampling
from pyro_vae.training.build import load_training_data
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.state import load_run_checkpoint, resumed_config


@dataclass
class Evaluation:
    """A trained model on its test split: the negative ELBO and log p(x) per image, in nats."""

    negative_elbo: float
    log_likelihood: evaluate.LogLikelihood


@dataclass
class TrainedRun:
    """A run's trained VAE (in eval mode), its config, its metrics (one dict an epoch) and its folder."""

    path: Path
    config: TrainConfig
    vae: VAE
    metrics: list[dict]
    finished: bool  # summary.json written: every epoch trained and reported
    dataset: data.Dataset | None = None  # loaded on first use

    @property
    def device(self) -> torch.device:
        return self.vae.log_sigma.device

    def test_images(self) -> torch.Tensor:
        """The run's test split as it was evaluated (binarized as configured), on the model's device."""
        if self.dataset is None:
            self.dataset = load_training_data(self.config, self.device)
        return self.dataset.test

    def evaluate(self, samples: int = 1000, images: int | None = None, seed: int = 0) -> Evaluation:
        """Test negative ELBO (exact KL where it exists) and importance-sampled log p(x) with `samples`
        per image, on the first `images` test images (all by default)."""
        x, rows = self.test_images()[:images], self.vae.test_rows(images)
        return Evaluation(
            evaluate.negative_elbo(self.vae, x, seed=seed, index=rows),
            evaluate.log_likelihood(self.vae, x, samples, seed=seed, index=rows),
        )

    def sample(self, n: int = 64, seed: int = 0) -> torch.Tensor:
        """n images from the model: decoder means of prior samples, shape (n, pixels)."""
        return sampling.prior_samples(self.vae, n, seed, self.device)

    def reconstruct(self, test_indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The test images `test_indices` and their reconstructions (decoder mean at q's location)."""
        index = torch.as_tensor(test_indices, device=self.device)
        x = self.test_images()[index]
        return x, sampling.reconstructions(self.vae, x, self._rows(index))

    def interpolate(self, a: int, b: int, steps: int = 10) -> torch.Tensor:
        """Decoder means along the straight latent line from test image a's q location to b's."""
        index = torch.tensor([a, b], device=self.device)
        return sampling.interpolation(self.vae, self.test_images()[index], self._rows(index), steps)

    def _rows(self, index: torch.Tensor) -> torch.Tensor | None:
        rows = self.vae.test_rows()
        return None if rows is None else rows[index]


def load_run(path: str | Path, device: str | torch.device = "cpu", data_dir: str | None = None) -> TrainedRun:
    """The run in folder `path` (finished, or interrupted: its last checkpoint), with the model on
    `device` in eval mode; `data_dir` if the run's data has moved."""
    path = Path(path)
    checkpoint = load_run_checkpoint(path, use="load_run")
    config = resumed_config(checkpoint, {}, TrainConfig)
    config = replace(config, cuda=torch.device(device).type == "cuda", data_dir=data_dir or config.data_dir)
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"load_run(device={device!r}): PyTorch sees no usable CUDA GPU")
    vae = VAE(config.model).to(device)
    vae.load_state_dict(checkpoint["model_state"])
    return TrainedRun(path, config, vae.eval(), checkpoint["progress"]["metrics"], (path / "summary.json").exists())
