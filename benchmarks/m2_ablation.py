"""What enumeration and the auxiliary loss buy M2: the semi-supervised VAE trained three ways on the same
labels, batches and seed, then its test accuracy.

    enumerated + aux   the label summed out exactly (TraceEnum_ELBO) and alpha log q(y|x) of the labelled
                       images added (alpha = 46, Pyro's tutorial's): the recipe
    enumerated         the same without the auxiliary loss (Pyro's tutorial reports 0.2254 at 100 labels)
    sampled + aux      the missing label drawn from q(y|x) (Trace_ELBO: the classifier learns from the score
                       function of one draw instead of the exact sum)

Every run keeps --labels labels (a balanced fixed draw), puts --per-batch of them in every batch beside the
unlabelled ones (`--labelled-per-batch`), scores grey pixels by the Bernoulli's binary cross entropy as the
tutorial does, and uses the tutorial's Adam (lr 0.00042, beta1 0.95), batch 200 and networks (500 softplus
units, z = 50). Prints a markdown table of test accuracy and seconds.

    python benchmarks/m2_ablation.py --epochs 30 --threads 1                          # the default 4,000 digits
    python benchmarks/m2_ablation.py --data-dir DATA_DIR --epochs 50 --threads 1      # MNIST
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

import pyro_vae
from pyro_vae.core.programs.m2 import SemiSupervisedVAE

VARIANTS = {  # name -> (estimator, aux weight, enumerated)
    "enumerated + aux": ("enum", 46.0, True),
    "enumerated": ("enum", 0.0, True),
    "sampled + aux": ("trace", 46.0, False),
}


def accuracy(variant: str, args: argparse.Namespace, out: Path) -> tuple[float, float]:
    """The variant's test accuracy after --epochs epochs, and its training seconds."""
    estimator, aux_weight, enumerated = VARIANTS[variant]
    torch.manual_seed(args.seed)  # the program's first weights
    m2 = SemiSupervisedVAE(aux_weight=aux_weight, enumerate_labels=enumerated)
    config = pyro_vae.TrainConfig(
        dataset="mnist" if args.data_dir else "default", data_dir=args.data_dir, labels_kept=args.labels,
        labelled_per_batch=args.per_batch, binarization="none", estimator=estimator, lr=0.00042, adam_beta1=0.95,
        batch_size=200, epochs=args.epochs, seed=args.seed, threads=args.threads, out=str(out),
        checkpoint_every=args.epochs,
    )  # fmt: skip
    tic = time.perf_counter()
    run = pyro_vae.train(config, model=m2.model, guide=m2.guide, progress=False, log=lambda line: None)
    test = run.test_data()
    return (m2.classify(test.test) == test.test_labels).double().mean().item(), time.perf_counter() - tic


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: the offline 4,000 digits)")
    p.add_argument("--labels", type=int, default=100, help="labels kept (default: %(default)s)")
    p.add_argument("--per-batch", type=int, default=100, help="labelled images in every batch (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=30, help="epochs of each variant (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the seed of every run (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the free cores)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="(default: all)")
    args = p.parse_args()
    if min(args.labels, args.per_batch, args.epochs) < 1:
        p.error("--labels, --per-batch and --epochs must be at least 1")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for variant in args.variants:
            value, seconds = accuracy(variant, args, Path(folder) / variant.replace(" + ", "-"))
            print(f"{variant}: test accuracy {value:.4f} ({seconds:.0f} s)", file=sys.stderr)
            rows.append(f"| {variant} | {value:.4f} | {seconds:.0f} |")
    data = "MNIST" if args.data_dir else "the default digits"
    print(f"| M2, {args.labels} labels, {data}, {args.epochs} epochs | test accuracy | seconds |\n|---|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
