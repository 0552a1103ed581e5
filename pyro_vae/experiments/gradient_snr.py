"""Gradient signal-to-noise against the number of samples K, per estimator, for the encoder and the decoder.

At fixed weights and one batch x, R independent draws of an estimator's gradient give
SNR = ||E g|| / sqrt(tr Cov[g]) (`compare.gradient_statistics`, with bootstrap resamples), and the slope of
log SNR on log K is fitted by least squares, its interval from the same resamples. Rainforth et al. (2018):
IWAE's encoder SNR falls like K^(-1/2) while its decoder's rises like K^(1/2); DReG's encoder SNR does not
fall; averaging K ELBO samples (`trace`, `stl`) raises both like K^(1/2); M copies (`miwae`, `piwae`) raise
the encoder's SNR like M^(1/2) at each K.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from pyro_vae.core.model import VAE
from pyro_vae.experiments import compare

GROUPS = ("encoder", "decoder")
WITH_COPIES = ("miwae", "piwae")


def label(estimator: str, copies: int) -> str:
    """The estimator's name in tables and figures, with its M where it has one."""
    return f"{estimator} M={copies}" if estimator in WITH_COPIES else estimator


def measure(
    vae: VAE, x: torch.Tensor, estimator: str, k: int, draws: int, bootstrap: int, seed: int, copies: int = 1
) -> dict:
    """SNR of the encoder's and the decoder's gradient at one K: {group: (bootstrap,) SNR, row 0 the sample's}."""
    m = copies if estimator in WITH_COPIES else 1
    sample = compare.gradient_draws(vae, estimator, x, draws, seed=seed + k, num_particles=k, copies=m)
    counts = compare.resample_counts(draws, bootstrap, seed=99)
    return {group: compare.gradient_statistics(sample[group], counts)["snr"] for group in GROUPS}


def slope(ks: list[int], snr: torch.Tensor) -> torch.Tensor:
    """Least-squares slope of log SNR on log K for every row of snr (rows, len(ks))."""
    log_k = torch.tensor([math.log(k) for k in ks], dtype=torch.float64)
    centred = log_k - log_k.mean()
    log_snr = snr.clamp(min=1e-300).log()
    return ((log_snr - log_snr.mean(1, keepdim=True)) * centred).sum(1) / centred.pow(2).sum()


def snr_against_k(
    models: dict[str, VAE],
    x: torch.Tensor,
    estimators: list[str],
    ks: list[int],
    draws: int = 100,
    bootstrap: int = 500,
    seed: int = 0,
    copies: int = 1,
    log: Callable[[str], None] = lambda line: None,
) -> tuple[list[dict], list[dict]]:
    """Every (snapshot, estimator, K)'s SNR with its 95% interval, and every (snapshot, estimator)'s slopes."""
    rows, slopes = [], []
    for where, vae in models.items():
        for estimator in estimators:
            name, samples = label(estimator, copies), {group: [] for group in GROUPS}
            for k in ks:
                row = dict(snapshot=where, estimator=name, K=k)
                for group, snr in measure(vae, x, estimator, k, draws, bootstrap, seed, copies).items():
                    samples[group].append(snr)
                    row[f"{group}_snr"], row[f"{group}_snr_low"], row[f"{group}_snr_high"] = compare.interval(snr)
                rows.append(row)
                log(
                    f"{where:>22} {name:>6} K={k:<4} SNR encoder {row['encoder_snr']:.3g}, decoder {row['decoder_snr']:.3g}"
                )
            fit = {g: compare.interval(slope(ks, torch.stack(s, dim=1))) for g, s in samples.items()}
            ends = ("", "_low", "_high")
            slopes.append(
                dict(
                    snapshot=where,
                    estimator=name,
                    **{f"{g}_slope{end}": v[i] for g, v in fit.items() for i, end in enumerate(ends)},
                )
            )
    return rows, slopes


def markdown_tables(rows: list[dict], slopes: list[dict]) -> str:
    """The SNR table and the slopes table, each value with its 95% interval."""

    def ci(r: dict, key: str) -> str:
        return f"{r[key]:.3g} [{r[key + '_low']:.3g}, {r[key + '_high']:.3g}]"

    lines = ["| snapshot | estimator | K | encoder SNR | decoder SNR |", "|---|---|---:|---|---|"]
    lines += [
        f"| {r['snapshot']} | {r['estimator']} | {r['K']} | {ci(r, 'encoder_snr')} | {ci(r, 'decoder_snr')} |"
        for r in rows
    ]
    lines += ["", "| snapshot | estimator | slope of log encoder SNR on log K | decoder |", "|---|---|---|---|"]
    lines += [
        f"| {s['snapshot']} | {s['estimator']} | {ci(s, 'encoder_slope')} | {ci(s, 'decoder_slope')} |" for s in slopes
    ]
    return "\n".join(lines) + "\n"
