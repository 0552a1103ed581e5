"""Pictures from a trained run: `python scripts/sample.py RUN_DIR --reconstruct 0 1 2 --interpolate 3 7 --gif`."""

import sys

from startup import guard_imports, imports_done

guard_imports()
from pyro_vae.cli.sample import main  # noqa: E402

imports_done()

if __name__ == "__main__":
    sys.exit(main())
