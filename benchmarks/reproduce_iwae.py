"""Burda, Grosse and Salakhutdinov (2016), Table 1, one or two stochastic layers, reproduced with pyro-vae.

Trains the paper's architecture (784-200-200-50, tanh, Bernoulli likelihood, dynamically binarized MNIST; with
--stochastic-layers 2, 784-200-200-100 then 100-100-50 for q(z2|z1) and 50-100-100-100 for p(z1|z2))
with this project's Pyro VAE (`pyro_vae.train.train`, the same code as `scripts/svi_train.py`), and with
`--reference` a plain-PyTorch model trained identically in the same run (the same initial weights,
objective, batch size, Adam, learning-rate schedule and binarization; its own random draws); then estimates the test log p(x) by importance sampling with K
samples per image (5,000 in the paper) and prints a markdown row beside the paper's figure.

    python benchmarks/reproduce_iwae.py --data-dir DATA_DIR --epochs 50 --reference          # CPU budget
    python benchmarks/reproduce_iwae.py --data-dir DATA_DIR --estimator iwae --num-particles 5
    python benchmarks/reproduce_iwae.py --data-dir DATA_DIR --stochastic-layers 2 --paper-recipe --kl-warmup 10
    python benchmarks/reproduce_iwae.py --data-dir DATA_DIR --paper-recipe --epochs 3280 --batch-size 20 --cuda

The paper trains with batch 20 for 3,280 passes with Adam (lr 1e-3 * 10^(-i/7) for 3^i passes, i = 0..7);
by default this script uses a larger batch and a geometric decay from --lr to --lr-final instead.
--paper-recipe takes the paper's ingredients: that schedule (stretched to --epochs), the decoder's output
bias at the logit of the mean training image (the authors' code) and Adam's eps = 1e-4; each is also a flag
of its own (the authors' code also runs Adam with beta1 = 0.99: --adam-beta1).

With --curve-every N, log p(x) on the first --curve-images test images (K = --curve-samples) is measured
every N epochs into the run's metrics.jsonl (with each epoch's training seconds), and quality_curve.png
plots it against epochs and hours. It monitors only: the last model is the one reported, as in the paper.
--resume RUN continues an interrupted run exactly (with --compile, compiled: equal to rounding); --reference-only
trains just the plain-PyTorch twin on the same recipe (into --out), and --reference-until X stops it once its
curve reaches X (time to quality).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pyro_vae.cli.startup import errors_said, starting_up  # noqa: E402

with starting_up():  # Ctrl-C while PyTorch loads: one line, exit 130
    import pyro
    import torch
    from reference_vae import PlainVAE, Recipe, log_likelihood
    from reference_vae import train as train_plain

    from pyro_vae import data
    from pyro_vae.cli.arguments import add_settings, config_from_args
    from pyro_vae.cli.parser import Parser
    from pyro_vae.core.model import VAE
    from pyro_vae.core.model_config import ModelConfig
    from pyro_vae.errors import ConfigError
    from pyro_vae.evaluation import likelihood as evaluate
    from pyro_vae.evaluation import plots
    from pyro_vae.evaluation.progress import progress_bar
    from pyro_vae.settings import check_declared, setting
    from pyro_vae.training.checkpoint.resume import load_run_checkpoint
    from pyro_vae.training.config import TrainConfig
    from pyro_vae.training.inputs import load_training_data, resolve_device
    from pyro_vae.training.loop import Interrupted, train
    from pyro_vae.training.trained_run import MAX_IMPORTANCE_SAMPLES, TrainedRun

# Table 1 of Burda et al. (2016), test log p(x) with k = 5000, by (stochastic layers, objective, k)
PAPER = {
    (1, "trace", 1): -86.76, (1, "trace", 50): -86.35, (1, "iwae", 5): -85.54, (1, "iwae", 50): -84.78,
    (2, "trace", 1): -85.33, (2, "trace", 5): -85.01, (2, "trace", 50): -84.78,
    (2, "iwae", 5): -83.89, (2, "iwae", 50): -82.90,
}  # fmt: skip
ARCHITECTURES = {
    1: ModelConfig(hidden=(200, 200), z_dim=50, activation="tanh"),
    2: ModelConfig(hidden=(200, 200), z_dim=100, stochastic_layers=2, z2_dim=50, hidden2=(100, 100), activation="tanh"),
}
ARCHITECTURE = ARCHITECTURES[1]


def main() -> int:
    args = parse_args()
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    config = training_config(args)  # every training setting checked against its declaration
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows, curves = [], {}
    if not args.reference_only:
        try:
            checkpoint = None if args.resume is None else load_run_checkpoint(Path(args.resume))
            run = train(config, progress=False, log=log, checkpoint=checkpoint)
        except Interrupted as stop:  # Ctrl-C, SIGTERM, SIGHUP: a checkpoint was written
            log(
                f"interrupted; checkpoint written. Resume with: python benchmarks/reproduce_iwae.py --resume {stop.folder}"
            )
            return stop.status
        config, out = run.config, run.path
        rows.append(pyro_row(run, args))
        curves["pyro-vae"] = run.metrics
    else:
        out = Path(args.out or f"runs/reference-{time.strftime('%Y%m%d-%H%M%S')}")
        out.mkdir(parents=True, exist_ok=True)
    if args.reference or args.reference_only:
        row, curves["plain PyTorch"] = plain_row(config, args, log)
        rows.append(row)
    report(rows, curves, config, args, out)
    return 0


SHARED = (  # the flags this command shares with training: declared there, with this command's defaults
    "data_dir", "estimator", "num_particles", "stochastic_layers", "kl_warmup", "epochs", "batch_size", "lr",
    "lr_final", "lr_schedule", "init_output_bias", "adam_beta1", "adam_eps", "seed", "cuda", "compile", "threads",
    "out",
)  # fmt: skip
PAPER_DEFAULTS = {"epochs": 50, "batch_size": 100, "lr_final": 1e-4}


@dataclass(frozen=True)
class Protocol:
    """This command's own settings, each declared once with its flag, range and help."""

    paper_recipe: bool = setting(False, "@lr_schedule paper @init_output_bias @adam_eps 1e-4: the paper's ingredients")
    eval_samples: int = setting(
        5000, "K of the final test log p(x); 0: none", low=0, high=MAX_IMPORTANCE_SAMPLES, metavar="K"
    )
    eval_images: int | None = setting(
        None, "evaluate the first N test images", low=1, high=100_000_000, metavar="N", default_text="all 10,000"
    )
    curve_every: int | None = setting(
        None, "epochs between the curve's log p(x)", low=1, high=1_000_000, metavar="N", default_text="none"
    )
    curve_images: int = setting(1000, "test images of the curve's log p(x)", low=1, high=100_000_000)
    curve_samples: int = setting(1000, "K of the curve's log p(x)", low=1, high=MAX_IMPORTANCE_SAMPLES)
    reference: bool = setting(False, "also train and evaluate the plain-PyTorch model")
    reference_only: bool = setting(False, "train and evaluate only the plain-PyTorch model")
    reference_until: float | None = setting(
        None, "stop the plain model's training once its curve's log p(x) reaches X (needs @curve_every)",
        low=-1e9, high=0, metavar="X", default_text="none",
    )  # fmt: skip
    resume: str | None = setting(
        None, "continue the interrupted Pyro run in RUN (with @compile: compiled)", metavar="RUN", default_text="none"
    )

    def __post_init__(self) -> None:
        check_declared(self)
        if self.reference_until is not None and self.curve_every is None:
            raise ConfigError("@reference_until needs @curve_every")


def parse_args() -> argparse.Namespace:
    """The flags: those shared with training from its declarations (`add_settings`), this command's own from
    `Protocol`'s; every value checked against its declaration, a bad one refused in one line."""
    p = Parser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings(p, TrainConfig, only=SHARED, defaults=PAPER_DEFAULTS)
    add_settings(p, Protocol)
    args = p.parse_args()
    config_from_args(args, Protocol)  # its checks
    if args.estimator not in ("trace", "meanfield", "iwae"):
        raise ConfigError(f"the paper's rows train with @estimator trace, meanfield or iwae, not {args.estimator}")
    if args.stochastic_layers == 2 and (args.reference or args.reference_only):
        raise ConfigError("the plain-PyTorch twin has one stochastic layer; @reference needs @stochastic_layers 1")
    if args.resume is not None and (args.reference_only or args.out is not None):
        raise ConfigError("@resume RUN continues the Pyro run in RUN; it takes no @out or @reference_only")
    return args


def training_config(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig: the paper's protocol (all 60,000 training images train, the last model is
    reported, no selection), the recipe the flags choose, the curve as periodic log p(x) evaluations."""
    if args.resume is not None:
        stored = TrainConfig.from_json(Path(args.resume) / "config.json")
        compile = stored.compile or args.compile  # may be turned on to speed up the rest of a long run
        return replace(stored, threads=args.threads, data_dir=args.data_dir or stored.data_dir, compile=compile)
    if args.paper_recipe:
        args.lr_schedule, args.init_output_bias, args.adam_eps = "paper", True, 1e-4
    recipe = dict(
        lr_schedule=args.lr_schedule,
        lr_final=args.lr_final if args.lr_schedule == "geometric" else None,
        adam_beta1=args.adam_beta1,
        adam_eps=args.adam_eps,
        init_output_bias=args.init_output_bias,
    )
    curve = (
        dict(eval_samples=args.curve_samples, eval_every=args.curve_every, eval_images=args.curve_images)
        if args.curve_every
        else {}
    )
    return TrainConfig(
        model=ARCHITECTURES[args.stochastic_layers],
        dataset="mnist",
        kl_warmup=args.kl_warmup,
        data_dir=args.data_dir,
        validation=0,
        estimator=args.estimator,
        num_particles=args.num_particles,
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        seed=args.seed,
        cuda=args.cuda,
        compile=args.compile,
        out=args.out,
        threads=args.threads,
        checkpoint_every=max(1, min(10, args.epochs // 10)),
        **recipe,
        **curve,
    )


def pyro_row(run: TrainedRun, args: argparse.Namespace) -> dict:
    """The trained Pyro run's final test log p(x), with its importance-weight diagnostics."""
    row = dict(model="pyro-vae", **_row_settings(run.config, run.metrics), run=str(run.path))
    if args.eval_samples:
        test = run.test_data().test[: args.eval_images]
        tic = time.perf_counter()
        with progress_bar(test.shape[0], f"final log p(x), K = {args.eval_samples}") as bar:
            estimate = evaluate.log_likelihood(run.vae, test, args.eval_samples, progress=bar.update)
        row.update(
            test_log_likelihood=estimate.value,
            standard_error=estimate.standard_error,
            eval_seconds=time.perf_counter() - tic,
            eval_samples=args.eval_samples,
            images=test.shape[0],
            **estimate.diagnostics(),
        )
    return row


def plain_row(config: TrainConfig, args: argparse.Namespace, log) -> tuple[dict, list[dict]]:
    """The plain-PyTorch twin trained on the same recipe: the Pyro run's initial weights (the same seed, the
    same output-bias initialization), objective, batches, Adam settings and schedule; its own random draws."""
    device = resolve_device(config.cuda)
    dataset = load_training_data(config, device)
    pyro.set_rng_seed(config.seed)  # as build_run does, so VAE(...) below has the Pyro run's initial weights
    initial = VAE(ARCHITECTURE)
    if config.init_output_bias:
        initial.init_output_bias(data.pixels(dataset.train.cpu()))
    plain = PlainVAE(hidden=ARCHITECTURE.hidden, z_dim=ARCHITECTURE.z_dim, activation=ARCHITECTURE.activation)
    plain = plain.copy_from(initial).to(device)
    recipe = Recipe(
        config.epochs,
        config.batch_size,
        config.schedule(1).learning_rate,
        config.adam_beta1,
        config.adam_eps,
        curve_every=config.eval_every or 0,
        curve_images=config.eval_images,
        curve_samples=config.eval_samples,
    )
    objective = {"trace": "monte-carlo", "meanfield": "analytic-kl", "iwae": "iwae"}[config.estimator]
    records = train_plain(
        plain, dataset, recipe, objective=objective, k=config.num_particles, until=args.reference_until, log=log
    )
    row = dict(model="plain PyTorch", **_row_settings(config, records))
    if args.eval_samples:
        plain.eval()
        test = dataset.test[: args.eval_images]
        tic = time.perf_counter()
        row.update(
            test_log_likelihood=log_likelihood(plain, test, args.eval_samples),
            standard_error=None,
            eval_seconds=time.perf_counter() - tic,
            eval_samples=args.eval_samples,
            images=test.shape[0],
        )
    return row, records


def _row_settings(config: TrainConfig, records: list[dict]) -> dict:
    return dict(
        estimator=config.estimator,
        k=config.num_particles,
        epochs=records[-1]["epoch"],
        batch=config.batch_size,
        schedule=config.lr_schedule,
        test_elbo=-records[-1]["test_loss"],
        train_seconds=sum(r["seconds"] for r in records),
    )


def time_to(records: list[dict], target: float) -> dict | None:
    """The first curve point at or above `target`: its epoch and the training seconds spent until then."""
    seconds = 0.0
    for record in records:
        seconds += record["seconds"]
        if record.get("test_log_likelihood", -float("inf")) >= target:
            return dict(epoch=record["epoch"], train_seconds=seconds, log_likelihood=record["test_log_likelihood"])
    return None


def report(
    rows: list[dict], curves: dict[str, list[dict]], config: TrainConfig, args: argparse.Namespace, out: Path
) -> None:
    """The markdown table (beside the paper's figure), the times to -90 and the paper's figure, the curve's
    figure and reproduce_iwae.json in `out`."""
    paper = PAPER.get((config.model.stochastic_layers, config.estimator, config.num_particles))
    name = {"trace": "VAE", "meanfield": "VAE (exact KL)", "iwae": "IWAE"}[config.estimator]
    print(
        "| model | objective | epochs, batch, schedule | test log p(x) (K) | test ELBO | paper | gap to paper | train s | eval s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "test_log_likelihood" in row:
            se = "" if row["standard_error"] is None else f" ± {row['standard_error']:.3f}"
            value = f"{row['test_log_likelihood']:.2f}{se} ({row['eval_samples']})"
            gap, seconds = (
                ("" if paper is None else f"{row['test_log_likelihood'] - paper:+.2f}"),
                f"{row['eval_seconds']:.0f}",
            )
        else:
            value, gap, seconds = "not evaluated", "", ""
        print(
            f"| {row['model']} | {name} k={row['k']} | {row['epochs']}, {row['batch']}, {row['schedule']} | {value} | "
            f"{row['test_elbo']:.2f} | {paper if paper is not None else 'n/a'} | {gap} | {row['train_seconds']:.0f} | {seconds} |"
        )
    if rows and "effective_sample_size_min" in rows[0]:
        d = rows[0]
        print(
            f"\npyro-vae's estimate: effective sample size {d['effective_sample_size_min']:.1f} to "
            f"{d['effective_sample_size_median']:.1f} (minimum, median) of K = {d['eval_samples']}; Pareto k-hat at "
            f"most {d['pareto_k_max']:.2f}, above 0.7 for {d['pareto_k_above_0_7']} of {d['images']} images"
        )
    targets = {}
    if config.eval_every:
        lines = {"log p(x) = -90": -90.0, **({f"paper ({paper})": paper} if paper is not None else {})}
        for model, records in curves.items():
            targets[model] = {str(t): time_to(records, t) for t in lines.values()}
            for target, hit in targets[model].items():
                print(
                    f"{model}: log p(x) >= {target} on the curve's {config.eval_images} images (K = {config.eval_samples}): "
                    + (
                        "not reached"
                        if hit is None
                        else f"epoch {hit['epoch']}, {hit['train_seconds'] / 60:.1f} min of training"
                    )
                )
        plots.quality_curves(
            curves,
            out / "quality_curve.png",
            lines,
            f"log p(x) on the first {config.eval_images} test images, K = {config.eval_samples}",
        )
    (out / "reproduce_iwae.json").write_text(
        json.dumps(
            dict(argv=sys.argv, rows=rows, paper=paper, time_to=targets, curves=curves, config=config.to_dict()),
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.exit(errors_said(main))
