"""Train one VAE per KL weight (beta) and the point-mass autoencoder; rate, distortion and figures (`--help` lists the flags)."""

import sys

from startup import guard_imports, imports_done

guard_imports()
from pyro_vae.cli.sweep import main  # noqa: E402

imports_done()

if __name__ == "__main__":
    sys.exit(main())
