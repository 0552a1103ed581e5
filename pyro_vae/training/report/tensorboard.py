"""TensorBoard event files of a run (`--tensorboard`, needs the `tensorboard` extra), in RUN_DIR/tensorboard,
so that `tensorboard --logdir runs` shows every run side by side. Per epoch:

    loss/train, loss/test, loss/validation   negative ELBO, nats per image (validation where there is one)
    elbo/test_reconstruction, elbo/test_kl   the test loss's two terms: -E_q log p(x|z) and KL(q || p)
    log_px/test                              the importance-sampled log p(x), when it was estimated
    settings/lr, settings/kl_weight           the learning rate and the KL weight in force
    images/reconstructions, images/samples   test images over their reconstructions; prior samples
and once, the run's config as text (`config`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pyro_vae import data
from pyro_vae.core.model import VAE
from pyro_vae.core.program import Program
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import plots, sampling

SCALARS = {
    "loss/train": "train_loss",
    "loss/test": "test_loss",
    "loss/validation": "validation_loss",
    "elbo/test_reconstruction": "test_reconstruction",
    "elbo/test_kl": "test_kl",
    "log_px/test": "test_log_likelihood",
    "settings/lr": "lr",
    "settings/kl_weight": "kl_weight",
}


class TensorBoardLog:
    """One run's event files."""

    def __init__(self, run_dir: Path, config: dict):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                '@tensorboard needs the tensorboard extra: pip install -e ".[tensorboard]" in a checkout, or '
                "pip install tensorboard"
            ) from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```")

    @torch.no_grad()
    def epoch(self, record: dict, vae: VAE | Program, dataset: data.Dataset, n_images: int = 16) -> None:
        step = record["epoch"]
        for tag, key in SCALARS.items():
            if key in record:
                self.writer.add_scalar(tag, record[key], step)
        if isinstance(vae, Program):  # its images are the program's own to draw
            self.writer.flush()
            return
        vae.eval()
        x, rows = dataset.first_test(n_images)
        pairs = torch.cat([x, sampling.reconstructions(vae, x, rows)])
        self.writer.add_images("images/reconstructions", _as_images(pairs, dataset.image_shape), step)
        samples = sampling.prior_samples(vae, 64, 0, x.device)
        self.writer.add_images("images/samples", _as_images(samples, dataset.image_shape), step)
        vae.train()
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _as_images(rows: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Rows of pixels as a (N, C, H, W) batch of images in [0, 1] (C = 1 or 3), on the CPU."""
    shown = plots.pictures(rows.clamp(0, 1).cpu(), shape)
    return shown.permute(0, 3, 1, 2) if shown.ndim == 4 else shown.unsqueeze(1)
