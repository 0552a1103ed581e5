"""Started by tests/test_lightning.py as `python tests/two_rank_lightning.py OUT`: the built-in VAE trained by
`lightning.Trainer` on two CPU processes (strategy "ddp", gloo) for two epochs; each rank saves its weights
and the logged metrics in OUT/rank<r>.pt."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning
import torch
from test_lightning import CONFIG

from pyro_vae.lightning import VAEModule


def main(out: Path) -> None:
    module = VAEModule(CONFIG)
    trainer = lightning.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=CONFIG.epochs, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    torch.save(
        dict(weights=module.vae.state_dict(), metrics=metrics, steps=trainer.global_step),
        out / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
