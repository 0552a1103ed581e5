"""Train a VAE with Pyro's SVI: `python scripts/svi_train.py --help` lists the flags."""

import sys

from startup import guard_imports, imports_done

guard_imports()
from pyro_vae.cli.train import main  # noqa: E402

imports_done()

if __name__ == "__main__":
    sys.exit(main())
