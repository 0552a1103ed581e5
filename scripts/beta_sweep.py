"""Train one VAE per KL weight (beta) and the point-mass autoencoder; rate, distortion and figures (`--help` lists the flags)."""

import sys

from pyro_vae.cli.startup import guarded_main

if __name__ == "__main__":
    sys.exit(guarded_main("pyro_vae.cli.sweep")())
