"""The built-in VAE trained by Lightning's Trainer, stopped early on the validation loss (docs/lightning.md).

python docs/examples/lightning_trainer.py --epochs 50 --out runs/lightning
"""

from __future__ import annotations

import argparse

import lightning
from lightning.pytorch.callbacks import EarlyStopping

from pyro_vae import ModelConfig, TrainConfig
from pyro_vae.lightning import VAEModule

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=50)
parser.add_argument("--out", default="runs/lightning", help="Lightning's default_root_dir (its logs, checkpoints)")
args = parser.parse_args()

config = TrainConfig(validation=500, model=ModelConfig(z_dim=16), threads=1)
module = VAEModule(config)  # or VAEModule(config, model=my_model, guide=my_guide, data=(train, test))
trainer = lightning.Trainer(
    max_epochs=args.epochs,
    accelerator="cpu",
    default_root_dir=args.out,
    callbacks=[EarlyStopping(monitor="validation_loss", patience=5)],
    enable_progress_bar=False,
)
trainer.fit(module)
print(
    f"test negative ELBO {float(trainer.callback_metrics['test_loss']):.3f} nats/image after {trainer.current_epoch} epochs"
)
