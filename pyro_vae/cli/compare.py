"""Compare ELBO estimators (Trace_ELBO against TraceMeanField_ELBO by default): gradient variance at
initialization, early and at the end of training; training curves over seeds; time per step.

    python scripts/compare_estimators.py                      # offline default data, a few minutes on CPU
    python scripts/compare_estimators.py --dataset mnist --data-dir DATA_DIR

Writes results.json (every number), variance.csv, curves.csv, timing.csv, report.md, variance.png and
curves.png to --out, and prints the report.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import asdict

import torch

from pyro_vae import files
from pyro_vae.cli.arguments import add_settings, config_from_args, with_flags
from pyro_vae.cli.parser import Parser
from pyro_vae.errors import ConfigError, PyroVAEError, os_error_line
from pyro_vae.evaluation import plots
from pyro_vae.evaluation.progress import progress_bar
from pyro_vae.experiments import compare, compare_report
from pyro_vae.settings import declared, whole_number
from pyro_vae.threads import use_threads
from pyro_vae.training.report.folder import new_run_dir


def parse(argv: list[str] | None) -> tuple[compare.CompareConfig, argparse.Namespace]:
    """The comparison's config from its flags (`arguments.add_settings`; --seeds is their count), and the
    parsed flags (--out)."""
    p = Parser(description=__doc__.split("\n\n")[0])
    add_settings(p, compare.CompareConfig, only=[f.name for f in declared(compare.CompareConfig)])
    p.add_argument("--seeds", type=int, default=3, help="training runs per estimator (default: %(default)s)")
    p.add_argument("--out", default=None, help="output folder (default: a new runs/<timestamp>)")
    args = p.parse_args(argv)
    try:
        seeds = tuple(range(whole_number("@seeds", args.seeds, 1, compare.MAX_SEEDS)))
        config = config_from_args(args, compare.CompareConfig, seeds=seeds)
        if config.early_step >= config.steps:  # the report's early snapshot
            raise ConfigError(
                f"@early_step ({config.early_step}) must come before the end of training (@steps {config.steps})"
            )
        return config, args
    except PyroVAEError as error:
        p.error(with_flags(error))


def train_runs(config: compare.CompareConfig, dataset, log) -> tuple[list[dict], dict]:
    """Every estimator's runs, one per seed: their curves, and the first run's snapshots (init, early, end)."""
    curves, snapshots = [], {}
    for estimator in config.estimators:
        for seed in config.seeds:
            keep = (0, config.early_step, config.steps) if (estimator, seed) == (config.estimators[0], 0) else ()
            with progress_bar(config.steps, f"{estimator} seed {seed}", unit="step") as bar:
                curve, states = compare.train_run(config, dataset, estimator, seed, keep, bar.update)
            curves += curve
            snapshots.update(states)
            log(
                f"trained {estimator} seed {seed}: {config.steps} steps in {curve[-1]['seconds']:.1f} s, "
                f"test loss {curve[-1]['test_loss']:.2f}"
            )
    return curves, snapshots


def main(argv: list[str] | None = None) -> int:
    config, args = parse(argv)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    try:
        use_threads(config.threads)
        dataset = compare.load_data(config)
        config.check_memory(dataset.x_dim)
        out = new_run_dir(args.out)
        log(f"{dataset.name}: {dataset.train.shape[0]} train / {dataset.test.shape[0]} test images; writing {out}")
        curves, snapshots = train_runs(config, dataset, log)
        named = {
            "init": snapshots[0],
            f"step {config.early_step}": snapshots[config.early_step],
            f"step {config.steps}": snapshots[config.steps],
        }
        variance, ratios = compare.variance_table(config, dataset, named)
        log(f"variance: {config.draws} draws x {len(config.estimators)} estimators x 3 snapshots done")
        timing = compare.time_steps(config, dataset)
        summary = compare_report.curve_summary(curves, config.estimators)
    except PyroVAEError as error:
        print(f"error: {with_flags(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C) before the report was written; run the command again", file=sys.stderr)
        return 130
    command = "python scripts/compare_estimators.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    report = compare_report.markdown_report(variance, ratios, timing, summary)
    header = (
        f"Command: `{command.strip()}`  \nData: {dataset.name}, batch {config.batch_size}, variance over "
        f"{config.draws} draws on {config.variance_batch} test images; torch threads {torch.get_num_threads()}.\n\n"
    )
    results = dict(variance=variance, ratios=ratios, timing=timing, curves=curves, summary=summary)
    try:
        write_outputs(out, header + report, dict(config=asdict(config), command=command, **results))
    except OSError as error:  # a full or read-only disk: the measurements are printed all the same
        print(f"error: {os_error_line(error)}; the report follows on stdout", file=sys.stderr)
        print(header + report)
        return 2
    print(header + report)
    return 0


def write_outputs(out, report: str, results: dict) -> None:
    """report.md, results.json, the CSV tables and the two figures in `out`."""
    (out / "report.md").write_text(report)
    files.write_json(out / "results.json", results)
    for name in ("variance", "curves", "timing"):
        files.write_csv(out / f"{name}.csv", results[name])
    plots.estimator_variance(results["variance"], out / "variance.png")
    plots.estimator_curves(results["curves"], out / "curves.png")
