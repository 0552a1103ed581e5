"""Train a VAE with Pyro's SVI: `python scripts/svi_train.py --help` lists the flags."""

import sys

from pyro_vae.cli.startup import guarded_main

if __name__ == "__main__":
    sys.exit(guarded_main("pyro_vae.cli.train")())
