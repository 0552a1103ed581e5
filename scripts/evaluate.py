"""Evaluate a trained run from its checkpoint: `python scripts/evaluate.py RUN_DIR --samples 5000`."""

import sys

from pyro_vae.cli.startup import guarded_main

if __name__ == "__main__":
    sys.exit(guarded_main("pyro_vae.cli.evaluate")())
