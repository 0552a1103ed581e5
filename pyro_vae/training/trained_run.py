"""A run folder back in Python: what `train()` returns and `load_run(path)` gives back.

    run = pyro_vae.load_run("runs/a")              # finished or interrupted, model in eval mode
    run.vae, run.config, run.metrics, run.path
    run.evaluate(samples=1000)                     # test negative ELBO and log p(x)
    run.ais(steps=1000, images=100)                # log p(x) by annealed importance sampling
    run.sample(16); run.reconstruct([0, 1, 2]); run.interpolate(0, 1)

A run trained on the user's own images or modules is loaded with them: `load_run(path, data=..., encoder=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from pyro_vae import data
from pyro_vae.core.model import VAE
from pyro_vae.core.parts import Parts
from pyro_vae.core.program import Program, built_model
from pyro_vae.core.programs import program_parts
from pyro_vae.data import Dataset, from_arrays
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import annealing, sampling
from pyro_vae.evaluation import likelihood as evaluate
from pyro_vae.evaluation.annealing import AnnealedEstimate
from pyro_vae.evaluation.program_annealing import program_ais
from pyro_vae.settings import whole_number
from pyro_vae.training import stopping
from pyro_vae.training.checkpoint import store
from pyro_vae.training.checkpoint.payload import Checkpoint
from pyro_vae.training.checkpoint.resume import load_run_checkpoint, resumed_config
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.inputs import check_run_images, load_training_data

MAX_PICTURES, MAX_PATH_STEPS = 10_000, 1_000  # prior samples and interpolation images per call
MAX_IMPORTANCE_SAMPLES = TrainConfig.__dataclass_fields__["eval_samples"].metadata["high"]
SEEDS = (0, 2**64 - 1)  # what torch.Generator.manual_seed takes


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
    vae: VAE | Program  # the built-in VAE, or the user's own program
    metrics: list[dict]
    finished: bool  # summary.json written: every epoch trained and reported
    dataset: data.Dataset | None = None  # loaded on first use
    images: data.Dataset | None = None  # the user's own images, for a run trained on them

    @property
    def device(self) -> torch.device:
        """The device the model's parameters are on."""
        return next(self.vae.parameters()).device

    def test_data(self) -> data.Dataset:
        """The run's data as it was evaluated (test split binarized as configured, rows for a local guide),
        on the model's device; loaded on first use."""
        if self.dataset is None:
            self.dataset = load_training_data(self.config, self.device, self.images)
        return self.dataset

    def test_images(self) -> torch.Tensor:
        """The run's test split as it was evaluated (binarized as configured), on the model's device."""
        return self.test_data().test

    def evaluate(self, samples: int = 1000, images: int | None = None, seed: int = 0) -> Evaluation:
        """Test negative ELBO (exact KL where it exists) and importance-sampled log p(x) with `samples`
        per image, on the first `images` test images (all by default)."""
        whole_number("samples", samples, 1, MAX_IMPORTANCE_SAMPLES)
        whole_number("seed", seed, *SEEDS)
        dataset = self.test_data()
        x, rows = dataset.first_test(self._count(images))
        labels = dataset.test_labels[: x.shape[0]] if self.vae.takes_labels else None  # a program of (x, y)'s
        return Evaluation(
            evaluate.negative_elbo(self.vae, x, seed=seed, rows=rows, labels=labels),
            evaluate.log_likelihood(self.vae, x, samples, seed=seed, rows=rows, labels=labels),
        )

    def ais(self, steps: int = 1000, chains: int = 16, images: int | None = None, seed: int = 0) -> AnnealedEstimate:
        """Test log p(x) on the first `images` test images by annealed importance sampling from the prior
        (`evaluation.annealing.ais`; for your own program `program_annealing.program_ais`, whose latent sites
        must be continuous with real support): a stochastic lower bound much tighter than `evaluate`'s at large
        `steps`."""
        seed = whole_number("seed", seed, SEEDS[0], SEEDS[1] - 1)  # bdmc's reverse pass draws with seed + 1
        dataset = self.test_data()
        x, _ = dataset.first_test(self._count(images))
        settings = annealing.Annealing(steps, chains, seed=seed)
        if isinstance(self.vae, Program):  # its latent sites, moved by the same chains
            labels = dataset.test_labels[: x.shape[0]] if self.vae.takes_labels else None
            return program_ais(self.vae, x, settings, labels)
        return annealing.ais(self.vae, x, settings)

    def sample(self, n: int = 64, seed: int = 0) -> torch.Tensor:
        """n images from the model: decoder means of prior samples, shape (n, pixels)."""
        self._check_vae("sample")
        n, seed = whole_number("n", n, 1, MAX_PICTURES), whole_number("seed", seed, *SEEDS)
        return sampling.prior_samples(self.vae, n, seed, self.device)

    def reconstruct(self, test_indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The test images `test_indices` and their reconstructions (decoder mean at q's location)."""
        self._check_vae("reconstruct")
        if not isinstance(test_indices, (list, tuple)) or not test_indices:
            raise ConfigError(f"test_indices must be a non-empty list of test image numbers, got {test_indices!r}")
        x, rows = self._pick([self._position(f"test_indices[{k}]", i) for k, i in enumerate(test_indices)])
        return x, sampling.reconstructions(self.vae, x, rows)

    def interpolate(self, a: int, b: int, steps: int = 10) -> torch.Tensor:
        """Decoder means along the straight latent line from test image a's q location to b's."""
        self._check_vae("interpolate")
        steps = whole_number("steps", steps, 2, MAX_PATH_STEPS)
        ends = self._pick([self._position("a", a), self._position("b", b)])
        return sampling.interpolation(self.vae, *ends, steps)

    def _check_vae(self, what: str) -> None:
        """Refuse, in one line, what only the built-in VAE answers (a decoder, a prior of known form)."""
        if isinstance(self.vae, Program):
            raise ConfigError(
                f"{what}() reads the built-in VAE's decoder and prior; this run trained your own program: run its "
                "model yourself (pyro.infer.Predictive(run.vae.run_model, ...)); evaluate() and ais() work for any "
                "program"
            )

    def _count(self, images: int | None) -> int | None:
        """`images` checked against the test split's size (None: all of them)."""
        return None if images is None else whole_number("images", images, 1, self.test_images().shape[0])

    def _position(self, name: str, index: object) -> int:
        """A test image's number, checked: 0 to the split's size - 1 (negative numbers do not wrap)."""
        return whole_number(name, index, 0, self.test_images().shape[0] - 1)

    def _pick(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The test images at `positions` and their rows (None without rows)."""
        dataset, chosen = self.test_data(), torch.tensor(positions, device=self.device)
        return dataset.test[chosen], None if dataset.test_rows is None else dataset.test_rows[chosen]


def checked_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device if it is the CPU or a CUDA GPU, else a one-line error."""
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r} ({error})") from None
    if chosen.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return chosen


def load_run(
    path: str | Path,
    device: str | torch.device = "cpu",
    data_dir: str | None = None,
    *,
    data: Dataset | tuple | None = None,
    encoder: nn.Module | None = None,
    decoder: nn.Module | None = None,
    guide: object = None,
    model: object = None,
    best: bool = False,
) -> TrainedRun:
    """The run in folder `path` (finished, or interrupted: its last checkpoint), with the model on
    `device` in eval mode; `data_dir` if the run's data has moved. A run trained on your own images or
    modules needs them again: `data` (for its test images), `encoder`, `decoder`, `guide` (new instances of
    the same classes; the checkpoint's weights are loaded into them); a run of your own Pyro program its
    `model` and `guide`. With `best`, the weights of its epoch of lowest validation loss (best.pt, kept by a
    run with `patience`; `metrics` then end at that epoch)."""
    path, parts, device = Path(path), Parts(encoder, decoder, guide, model), checked_device(device)
    checkpoint = best_checkpoint(path, parts) if best else load_run_checkpoint(path, use="load", parts=parts)
    config = resumed_config(checkpoint, {})
    config = replace(config, cuda=torch.device(device).type == "cuda", data_dir=data_dir or config.data_dir)
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"load_run(device={device!r}): PyTorch sees no usable CUDA GPU")
    parts = program_parts(config.program, parts, config.model.x_dim, config.seed, config.program_options)
    vae = built_model(config.model, parts).to(device)
    vae.load_state_dict(checkpoint.model_state)
    metrics, finished = checkpoint.progress.metrics, (path / "summary.json").exists()
    images = data if data is None or isinstance(data, Dataset) else from_arrays(*data)
    if images is not None:
        check_run_images(path, config.model.x_dim, images)
    return TrainedRun(path, config, vae.eval(), metrics, finished, images=images)


def best_checkpoint(path: Path, parts: Parts) -> Checkpoint:
    """The run's best.pt (its epoch of lowest validation loss), or why there is none (the last checkpoint is
    read only to say why)."""
    best = path / stopping.BEST_FILE
    if not best.is_file():
        last = load_run_checkpoint(path, use="load", parts=parts)
        kept = (
            " (no epoch trained with patience has yet had the lowest validation loss of the run)"
            if last.config.get("patience")
            else " (it was trained without patience, which keeps it)"
        )
        raise ConfigError(f"{path} has no {stopping.BEST_FILE}{kept}; leave out best to load its last weights")
    return store.load(best, parts)
