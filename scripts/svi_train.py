"""Train a VAE with Pyro's SVI: `python scripts/svi_train.py --help` lists the flags."""

import sys

from pyro_vae.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
