"""Evaluate a trained run from its checkpoint: `python scripts/evaluate.py RUN_DIR --samples 5000`."""

import sys

from startup import guard_imports, imports_done

guard_imports()
from pyro_vae.cli.evaluate import main  # noqa: E402

imports_done()

if __name__ == "__main__":
    sys.exit(main())
