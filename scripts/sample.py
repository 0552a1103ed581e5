"""Pictures from a trained run: `python scripts/sample.py RUN_DIR --reconstruct 0 1 2 --interpolate 3 7 --gif`."""

import sys

from pyro_vae.cli.startup import guarded_main

if __name__ == "__main__":
    sys.exit(guarded_main("pyro_vae.cli.sample")())
