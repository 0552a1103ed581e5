"""TrainConfig: everything a training run depends on (the model's own part, ModelConfig, lives in model.py).

`config.json` in a run folder is a TrainConfig as JSON; the command line builds one, the library takes one.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyro_vae import data
from pyro_vae.core.estimators import SCORE_FUNCTION, build_elbo
from pyro_vae.core.model import ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.settings import from_values

LR_SCHEDULES = ("geometric", "paper")
# the largest value each setting may take: far beyond any sensible run, small enough that no size overflows
# and no command is asked to run for years (a larger value is refused up front, naming the bound)
UPPER_BOUNDS = {
    "num_particles": 100_000,
    "batch_size": 10_000_000,
    "epochs": 1_000_000,
    "checkpoint_every": 1_000_000,
    "lr": 10.0,
    "local_lr": 1000.0,
    "beta": 1e6,
    "kl_warmup": 1e6,
    "eval_samples": 1_000_000,
    "eval_every": 1_000_000,
    "eval_images": 100_000_000,
    "validation": 100_000_000,
    "threads": 4096,
}
PAPER_EPOCHS = sum(3**i for i in range(8))  # 3,280: Burda et al.'s eight stages of 3^i epochs


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; `config.json` in the run folder is this, as JSON."""

    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: str = "default"
    data_dir: str | None = None
    binarization: str | None = None  # None: dynamic for a Bernoulli likelihood, none otherwise
    estimator: str = "trace"
    num_particles: int = 1
    lr: float = 1e-3
    batch_size: int = 256  # the global batch: under torchrun each rank takes its share of every batch
    epochs: int = 10
    seed: int = 0
    threads: int | None = None  # None: PyTorch's default
    beta: float = 1.0
    kl_warmup: float = 0.0  # epochs of linear KL warm-up from 0 to beta
    cuda: bool = False
    out: str | None = None  # None: runs/<timestamp>
    checkpoint_every: int = 1  # epochs between checkpoints (one is always written at the end)
    on_nonfinite: str = "stop"  # a NaN or infinite loss or gradient: "stop" the run, or "skip" the step
    lr_final: float | None = None  # None: constant lr; else lr decays geometrically to this by the last epoch
    eval_samples: int = 0  # K of the importance-sampled test log p(x); 0: not computed
    eval_every: int | None = None  # epochs between log p(x) evaluations; None: at the end only
    validate_every_step: bool = False  # Pyro's distribution checks on every step, not only the first
    local_lr: float = 0.05  # local guide: Adam learning rate of the per-point parameters (SparseAdam)
    tensorboard: bool = False  # also write TensorBoard event files into the run folder
    validation: int | None = None  # training images held out for validation; None: data.DEFAULT_VALIDATION
    lr_schedule: str = "geometric"  # "geometric" (constant without lr_final) or "paper" (Burda et al.'s stages)
    adam_beta1: float = 0.9  # Adam's first-moment decay (the IWAE authors' code: 0.99)
    adam_eps: float = 1e-8  # Adam's denominator term (the IWAE authors' code: 1e-4)
    init_output_bias: bool = False  # start the decoder's output bias at the logit of the mean training image
    eval_images: int | None = None  # log p(x) on the first N test images; None: all

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):  # TrainConfig(**json.load(...)): the nested settings too
            object.__setattr__(self, "model", from_values(ModelConfig, self.model, "model"))
        if self.eval_samples < 0 or (self.eval_every is not None and self.eval_every < 1):
            raise ConfigError(
                f"--eval-samples must be 0 or more and --eval-every at least 1, got {self.eval_samples}, {self.eval_every}"
            )
        if self.lr_final is not None and not (self.lr_final > 0 and math.isfinite(self.lr_final)):
            raise ConfigError(f"--lr-final must be a positive number, got {self.lr_final}")
        for name in ("num_particles", "batch_size", "epochs", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "local_lr"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive number, got {getattr(self, name)}")
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ConfigError(f"--beta must be a number, zero or more, got {self.beta}")
        if not (0 <= self.kl_warmup < math.inf):
            raise ConfigError(f"--kl-warmup must be a number of epochs, zero or more, got {self.kl_warmup}")
        for name, most in UPPER_BOUNDS.items():
            value = getattr(self, name)
            if value is not None and value > most:
                raise ConfigError(f"--{name.replace('_', '-')} must be at most {most:,}, got {value:,}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.lr_schedule == "paper" and self.lr_final is not None:
            raise ConfigError(
                "--lr-schedule paper sets its own decay (lr * 10^(-i/7) in stage i); leave out --lr-final"
            )
        if not (0 <= self.adam_beta1 < 1 and 0 < self.adam_eps < 1):
            raise ConfigError(
                f"--adam-beta1 must be in [0, 1) and --adam-eps in (0, 1), got {self.adam_beta1}, {self.adam_eps}"
            )
        if self.init_output_bias and self.model.likelihood != "bernoulli":
            raise ConfigError(
                "--init-output-bias sets Bernoulli logits to the mean training image's; "
                f"it is for --likelihood bernoulli, not {self.model.likelihood}"
            )
        if self.eval_images is not None and self.eval_images < 1:
            raise ConfigError(f"--eval-images must be at least 1, got {self.eval_images}")
        if self.validation is not None and self.validation < 0:
            raise ConfigError(f"--validation must be 0 (none) or a number of training images, got {self.validation}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed must be a whole number from 0 to 2**32 - 1, got {self.seed}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.binarization is not None and self.binarization not in data.BINARIZATIONS:
            raise ConfigError(
                f"unknown binarization {self.binarization!r}; choose one of: {', '.join(data.BINARIZATIONS)}"
            )
        if self.on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"--on-nonfinite must be stop or skip, got {self.on_nonfinite!r}")
        build_elbo(self.estimator, self.num_particles)  # validates the name and particle count
        if self.estimator == "iwae" and (self.beta != 1 or self.kl_warmup > 0):
            raise ConfigError(
                "--estimator iwae trains the importance-weighted bound, which has no separate KL "
                "term to weight; leave --beta at 1 and --kl-warmup at 0"
            )
        self._check_estimator_and_guide()

    def _check_estimator_and_guide(self) -> None:
        """The combinations of estimator, guide and KL weight that have no meaning, refused."""
        if self.estimator in SCORE_FUNCTION and (self.beta != 1 or self.kl_warmup > 0):
            raise ConfigError(
                f"--estimator {self.estimator} weights the KL term as Pyro scales the z site, which "
                "would scale the score function's weight too; leave --beta at 1 and --kl-warmup at 0"
            )
        if self.estimator in SCORE_FUNCTION and self.model.guide == "delta":
            raise ConfigError(
                "--guide delta is a point mass: its log-density does not move with the encoder, so "
                "it has no score function; train it with a pathwise estimator (trace, meanfield)"
            )
        if self.beta == 0 and self.estimator.startswith("jit-"):
            raise ConfigError(
                f"--estimator {self.estimator} passes the KL weight as a traced tensor, and Pyro "
                "refuses a zero scale; use trace or meanfield with --beta 0"
            )
        if self.model.guide == "delta" and self.eval_samples > 0:
            raise ConfigError(
                "--guide delta is a point mass, which has no density to importance-sample log p(x) "
                "with; leave out --eval-samples"
            )

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """The config a dict describes (as `to_dict` gives it, the model's settings nested under "model");
        an unknown key or a value of the wrong type is refused with a one-line ConfigError."""
        return from_values(cls, values, "config")

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        """The config in a JSON file, such as a run folder's config.json."""
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read a config from {path}: {error}") from None
        return from_values(cls, values, str(path))

    def to_dict(self) -> dict:
        """Plain values (JSON-ready), the model's settings nested under "model"."""
        return asdict(self)

    @property
    def resolved_validation(self) -> int:
        """Training images held out for validation: as given, else the dataset's default; none for the local
        guide, which fits q only for its own training and test subsets."""
        if self.model.guide == "local":
            return 0
        return self.validation if self.validation is not None else data.DEFAULT_VALIDATION.get(self.dataset, 0)

    @property
    def resolved_binarization(self) -> str:
        if self.binarization is not None:
            return self.binarization
        return "dynamic" if self.model.likelihood == "bernoulli" else "none"

    def lr_decay(self, epoch: int) -> float:
        """The learning rates' factor for epoch (0-based); it multiplies lr and the local guide's local_lr alike.

        geometric: 1, or (lr_final / lr)^(epoch / (epochs - 1)) with --lr-final.
        paper: 10^(-i/7) in stage i = 0..7 of Burda et al. (2016), which lasts 3^i of its 3,280 epochs; the
        stages are stretched to this run's `epochs` (epochs = 3,280 gives the paper's own).
        """
        if self.lr_schedule == "paper":
            position = epoch * PAPER_EPOCHS / self.epochs  # where this epoch starts on the paper's time axis
            stage = max(i for i in range(8) if (3**i - 1) / 2 <= position)  # stages 0..i-1 take (3^i - 1)/2 epochs
            return 10 ** (-stage / 7)
        if self.lr_final is None or self.epochs == 1:
            return 1.0
        return (self.lr_final / self.lr) ** (epoch / (self.epochs - 1))

    def learning_rate(self, epoch: int) -> float:
        """lr for epoch (0-based): constant, or decaying geometrically to lr_final at the last epoch."""
        return self.lr * self.lr_decay(epoch)

    def evaluates_log_likelihood(self, epoch: int) -> bool:
        """Whether log p(x) is estimated after epoch (1-based): every eval_every epochs and after the last."""
        if self.eval_samples == 0:
            return False
        return epoch == self.epochs or (self.eval_every is not None and epoch % self.eval_every == 0)

    def kl_scale(self, step: int, steps_per_epoch: int) -> float:
        """beta, ramped linearly over the first `kl_warmup` epochs: beta * min(1, step / warm-up steps)."""
        if self.kl_warmup == 0:
            return self.beta
        return self.beta * min(1.0, step / (self.kl_warmup * steps_per_epoch))
