"""The estimator comparison's report: the training curves summarized over seeds, and every table in markdown
(variance and signal-to-noise with bootstrap intervals, ratios to the first estimator, time per step)."""

from __future__ import annotations

import statistics


def curve_summary(curves: list[dict], estimators: tuple[str, ...]) -> list[dict]:
    """Per estimator, the final test loss over seeds: mean, standard deviation, min and max."""
    rows = []
    final_step = max(point["step"] for point in curves)
    for estimator in estimators:
        finals = [p["test_loss"] for p in curves if p["estimator"] == estimator and p["step"] == final_step]
        seconds = [p["seconds"] for p in curves if p["estimator"] == estimator and p["step"] == final_step]
        std = statistics.stdev(finals) if len(finals) > 1 else float("nan")
        rows.append(
            dict(
                estimator=estimator,
                steps=final_step,
                seeds=len(finals),
                final_test_loss=statistics.mean(finals),
                std=std,
                min=min(finals),
                max=max(finals),
                train_seconds=statistics.mean(seconds),
            )
        )
    return rows


def _ci(row: dict, key: str, digits: int = 3) -> str:
    return f"{row[key]:.{digits}g} [{row[key + '_low']:.{digits}g}, {row[key + '_high']:.{digits}g}]"


def _table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        f"### {title}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


VARIANCE_COLUMNS = ("loss_std", "encoder_variance", "encoder_snr", "decoder_variance", "decoder_snr")
RATIO_COLUMNS = ("loss_std", "encoder_variance", "decoder_variance", "encoder_snr")


def markdown_report(variance: list[dict], ratios: list[dict], timing: list[dict], summary: list[dict]) -> str:
    """The four tables of a comparison, as markdown; every interval is a 95% bootstrap interval."""
    lines = (
        _table(
            "Gradient variance and loss spread (one batch, R independent draws)",
            ["snapshot", "estimator", "mean loss", "per-image loss std", "encoder tr Cov", "encoder SNR"]
            + ["decoder tr Cov", "decoder SNR"],
            [
                [r["snapshot"], r["estimator"], f"{r['loss']:.2f}", *(_ci(r, k) for k in VARIANCE_COLUMNS)]
                for r in variance
            ],
        )
        + _table(
            "Ratios (first estimator over the other; above 1: the other has less)",
            ["snapshot", "ratio", "per-image loss std", "encoder tr Cov", "decoder tr Cov", "encoder SNR"],
            [[r["snapshot"], r["ratio"], *(_ci(r, key) for key in RATIO_COLUMNS)] for r in ratios],
        )
        + _table(
            "Training at equal budget (test negative ELBO, nats per image)",
            ["estimator", "steps", "seeds", "final test loss, mean ± std", "min", "max", "training seconds"],
            [_summary_row(r) for r in summary],
        )
        + _table(
            "Time per training step (median of the rounds, [min, max])",
            ["estimator", "particles", "ms per step", "ratio to the first"],
            [_timing_row(r) for r in timing],
        )
    )
    return "\n".join(lines[:-1]) + "\n"


def _summary_row(r: dict) -> list[str]:
    spread = f"{r['final_test_loss']:.2f} ± {r['std']:.2f}"
    return [r["estimator"], str(r["steps"]), str(r["seeds"]), spread, f"{r['min']:.2f}", f"{r['max']:.2f}"] + [
        f"{r['train_seconds']:.1f}"
    ]


def _timing_row(r: dict) -> list[str]:
    ms = f"{r['ms_per_step']:.2f} [{r['ms_min']:.2f}, {r['ms_max']:.2f}]"
    return [r["estimator"], str(r["particles"]), ms, f"{r['ratio_to_first']:.2f}"]
