"""A plain-PyTorch VAE, the reference every figure of pyro-vae is compared against.

Same networks, data, batch, optimizer and binarization as `scripts/svi_train.py` defaults, written
the way pytorch/examples writes a VAE: the negative ELBO as binary cross-entropy plus the closed-form
KL, per image. No Pyro.

    python benchmarks/reference_vae.py --dataset mnist --data-dir ../shared/data --epochs 10
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from pyro_vae import data


class PlainVAE(nn.Module):
    def __init__(self, x_dim: int = 784, hidden: int = 400, z_dim: int = 50):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(x_dim, hidden), nn.Softplus(), nn.Linear(hidden, 2 * z_dim))
        self.dec = nn.Sequential(nn.Linear(z_dim, hidden), nn.Softplus(), nn.Linear(hidden, x_dim))

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Negative ELBO per image: BCE(x, decoder(z)) + KL(N(mu, sigma^2) || N(0, I)), one sample."""
        loc, log_scale = self.enc(x).chunk(2, -1)
        scale = log_scale.exp()
        z = loc + scale * (torch.randn_like(loc) if eps is None else eps)
        rec = F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="sum")
        kl = 0.5 * (scale.pow(2) + loc.pow(2) - 1 - 2 * log_scale).sum()
        return (rec + kl) / x.shape[0]


@torch.no_grad()
def test_loss(vae: PlainVAE, x: torch.Tensor, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for chunk in x.split(2000):
        eps = torch.randn((chunk.shape[0], vae.enc[-1].out_features // 2), generator=g)
        total += vae(chunk, eps).item() * chunk.shape[0]
    return total / x.shape[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="default", choices=data.DATASETS)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dataset = data.prepare(data.load_dataset(args.dataset, args.data_dir), "dynamic")
    vae = PlainVAE()
    opt = torch.optim.Adam(vae.parameters(), lr=args.lr)
    n = dataset.train.shape[0]
    for epoch in range(1, args.epochs + 1):
        tic, total = time.perf_counter(), 0.0
        for idx in torch.randperm(n).split(args.batch_size):
            x = torch.bernoulli(dataset.train[idx])
            opt.zero_grad(set_to_none=True)
            loss = vae(x)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        seconds = time.perf_counter() - tic
        record = dict(epoch=epoch, train_loss=total / n, test_loss=test_loss(vae, dataset.test), seconds=seconds)
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
