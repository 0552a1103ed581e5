"""Train one VAE per KL weight (beta) and the point-mass autoencoder; rate, distortion and figures (`--help` lists the flags)."""

import sys

from pyro_vae.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
