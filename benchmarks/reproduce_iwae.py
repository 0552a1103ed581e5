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
from dataclasses import replace
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_vae import PlainVAE, Recipe, log_likelihood  # noqa: E402
from reference_vae import train as train_plain

from pyro_vae import data  # noqa: E402
from pyro_vae.core.model import VAE  # noqa: E402
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.evaluation import likelihood as evaluate  # noqa: E402
from pyro_vae.evaluation import plots
from pyro_vae.evaluation.progress import progress_bar  # noqa: E402
from pyro_vae.training.checkpoint.resume import load_run_checkpoint  # noqa: E402
from pyro_vae.training.inputs import load_training_data, resolve_device  # noqa: E402
from pyro_vae.training.loop import Interrupted, TrainConfig, train  # noqa: E402
from pyro_vae.training.schedule import LR_SCHEDULES  # noqa: E402
from pyro_vae.training.trained_run import TrainedRun  # noqa: E402

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
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    config = training_config(args)
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


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", default=None, help=f"folder holding MNIST/raw (default: ${data.DATA_DIR_ENV})")
    p.add_argument(
        "--estimator",
        choices=("trace", "meanfield", "iwae"),
        default="trace",
        help="VAE with Monte Carlo KL as in the paper (trace), with exact KL (meanfield), or IWAE (default: %(default)s)",
    )
    p.add_argument("--num-particles", type=int, default=1, help="k of the training objective (default: %(default)s)")
    p.add_argument("--stochastic-layers", type=int, choices=(1, 2), default=1, help="(default: %(default)s)")
    p.add_argument(
        "--kl-warmup", type=float, default=0.0, help="epochs of linear KL warm-up from 0 to 1 (default: none)"
    )
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-final", type=float, default=1e-4, help="geometric decay's end (default: %(default)s)")
    p.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default="geometric",
        help="geometric (to --lr-final) or the paper's stages stretched to --epochs (default: %(default)s)",
    )
    p.add_argument(
        "--init-output-bias", action="store_true", help="the decoder's output bias at the mean training image's logit"
    )
    p.add_argument("--adam-beta1", type=float, default=0.9, help="(default: %(default)s; the authors' code: 0.99)")
    p.add_argument("--adam-eps", type=float, default=1e-8, help="(default: %(default)s; the paper: 1e-4)")
    p.add_argument(
        "--paper-recipe",
        action="store_true",
        help="--lr-schedule paper --init-output-bias --adam-eps 1e-4: the paper's ingredients",
    )
    p.add_argument(
        "--eval-samples", type=int, default=5000, help="K of the final test log p(x); 0: none (default: %(default)s)"
    )
    p.add_argument(
        "--eval-images", type=int, default=None, help="evaluate the first N test images (default: all 10,000)"
    )
    p.add_argument(
        "--curve-every", type=int, default=None, metavar="N", help="epochs between the curve's log p(x) (default: none)"
    )
    p.add_argument("--curve-images", type=int, default=1000, help="(default: %(default)s)")
    p.add_argument("--curve-samples", type=int, default=1000, help="(default: %(default)s)")
    p.add_argument("--reference", action="store_true", help="also train and evaluate the plain-PyTorch model")
    p.add_argument("--reference-only", action="store_true", help="train and evaluate only the plain-PyTorch model")
    p.add_argument(
        "--reference-until",
        type=float,
        default=None,
        metavar="X",
        help="stop the plain model's training once its curve's log p(x) reaches X (needs --curve-every)",
    )
    p.add_argument(
        "--resume",
        metavar="RUN",
        default=None,
        help="continue the interrupted Pyro run in RUN (with --compile: compiled)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cuda", action="store_true")
    p.add_argument(
        "--compile", action="store_true", help="train the Pyro model with its loss traced and compiled (--compile)"
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="the run's folder (default: a new runs/<timestamp>)")
    args = p.parse_args()
    if args.reference_until is not None and args.curve_every is None:
        p.error("--reference-until needs --curve-every")
    if args.stochastic_layers == 2 and (args.reference or args.reference_only):
        p.error("the plain-PyTorch twin has one stochastic layer; --reference needs --stochastic-layers 1")
    if args.resume is not None and (args.reference_only or args.out is not None):
        p.error("--resume RUN continues the Pyro run in RUN; it takes no --out or --reference-only")
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
        test = run.dataset.test[: args.eval_images]
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
        initial.init_output_bias(dataset.train.cpu())
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
    sys.exit(main())
