"""What enumeration and the auxiliary loss buy M2: the semi-supervised VAE trained three ways on the same
labels, batches and seed, then its test accuracy.

    enumerated + aux   the label summed out exactly (TraceEnum_ELBO) and alpha log q(y|x) of the labelled
                       images added (alpha = 46, Pyro's tutorial's): the recipe
    enumerated         the same without the auxiliary loss (Pyro's tutorial reports 0.2254 at 100 labels)
    sampled + aux      the missing label drawn from q(y|x) (Trace_ELBO: the classifier learns from the score
                       function of one draw instead of the exact sum)
    tutorial init      the recipe with the first weights of Pyro's tutorial's networks (`utils/custom_mlp.py`:
                       hidden layers' weights and biases from N(0, 0.001^2), output layers PyTorch's default),
                       in place of PyTorch's default everywhere (not in the default set)

Every run keeps --labels labels (a balanced fixed draw, --labels-seed), puts --per-batch of them in every
batch beside the unlabelled ones (`--labelled-per-batch`) or, with --labelled-batches, into batches of their
own (the tutorial's layout), scores grey pixels by the Bernoulli's binary cross entropy as the tutorial does,
and uses the tutorial's Adam (lr 0.00042, beta1 0.95), batch 200 and networks (500 softplus units, z = 50).
Prints a markdown table of test accuracy and seconds.

    python benchmarks/m2_ablation.py --epochs 30 --threads 1                          # the default 4,000 digits
    python benchmarks/m2_ablation.py --data-dir DATA_DIR --epochs 50 --threads 1      # MNIST
    python benchmarks/m2_ablation.py --data-dir DATA_DIR --labels 3000 --labels-seed 5 --labelled-batches \
        --epochs 50 --threads 1 --variants "enumerated + aux" "tutorial init"          # RESULTS.md's init row
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

import pyro_vae
from pyro_vae import data
from pyro_vae.core.programs.m2 import SemiSupervisedVAE

VARIANTS = {  # name -> (estimator, aux weight, enumerated, the tutorial's first weights)
    "enumerated + aux": ("enum", 46.0, True, False),
    "enumerated": ("enum", 0.0, True, False),
    "sampled + aux": ("trace", 46.0, False, False),
    "tutorial init": ("enum", 46.0, True, True),
}
DEFAULT_VARIANTS = ["enumerated + aux", "enumerated", "sampled + aux"]


def accuracy(variant: str, args: argparse.Namespace, out: Path) -> tuple[float, float]:
    """The variant's test accuracy after --epochs epochs, and its training seconds."""
    estimator, aux_weight, enumerated, tutorial_init = VARIANTS[variant]
    torch.manual_seed(args.seed)  # the program's first weights
    m2 = SemiSupervisedVAE(aux_weight=aux_weight, enumerate_labels=enumerated)
    if tutorial_init:
        tutorial_initialization(m2)
    layout = dict(labelled_batches=True) if args.labelled_batches else dict(labelled_per_batch=args.per_batch)
    config = pyro_vae.TrainConfig(
        dataset="mnist" if args.data_dir else "default", data_dir=args.data_dir, labels_kept=args.labels,
        labels_seed=args.labels_seed, binarization="none", estimator=estimator, lr=0.00042, adam_beta1=0.95,
        batch_size=200, epochs=args.epochs, seed=args.seed, threads=args.threads, out=str(out),
        checkpoint_every=args.epochs, **layout,
    )  # fmt: skip
    tic = time.perf_counter()
    run = pyro_vae.train(config, model=m2.model, guide=m2.guide, progress=False, log=lambda line: None)
    test = run.test_data()
    return (m2.classify(test.test) == test.test_labels).double().mean().item(), time.perf_counter() - tic


def tutorial_initialization(m2: SemiSupervisedVAE, std: float = 0.001) -> None:
    """Each network's hidden layer redrawn as Pyro's tutorial draws it: weights and biases ~ N(0, std^2)."""
    for network in (m2.classifier, m2.encoder, m2.decoder):
        hidden = network[0][0]
        hidden.weight.data.normal_(0, std)
        hidden.bias.data.normal_(0, std)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: the offline 4,000 digits)")
    p.add_argument("--labels", type=int, default=100, help="labels kept (default: %(default)s)")
    p.add_argument("--labels-seed", type=int, default=data.LABELS_SEED,
                   help="which fixed draw of the labels (default: %(default)s)")  # fmt: skip
    p.add_argument("--per-batch", type=int, default=100, help="labelled images in every batch (default: %(default)s)")
    p.add_argument("--labelled-batches", action="store_true",
                   help="the labelled images in batches of their own (the tutorial's layout), not --per-batch")  # fmt: skip
    p.add_argument("--epochs", type=int, default=30, help="epochs of each variant (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the seed of every run (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the free cores)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=DEFAULT_VARIANTS,
                   help="(default: %(default)s)")  # fmt: skip
    args = p.parse_args()
    if min(args.labels, args.per_batch, args.epochs) < 1 or args.labels_seed < 0:
        p.error("--labels, --per-batch and --epochs must be at least 1, --labels-seed at least 0")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for variant in args.variants:
            value, seconds = accuracy(variant, args, Path(folder) / variant.replace(" + ", "-"))
            print(f"{variant}: test accuracy {value:.4f} ({seconds:.0f} s)", file=sys.stderr)
            rows.append(f"| {variant} | {value:.4f} | {seconds:.0f} |")
    images = "MNIST" if args.data_dir else "the default digits"
    layout = "labelled batches" if args.labelled_batches else f"{args.per_batch} labelled in every batch"
    print(f"| M2, {args.labels} labels, {images}, {layout}, {args.epochs} epochs | test accuracy | seconds |")
    print("|---|---:|---:|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
