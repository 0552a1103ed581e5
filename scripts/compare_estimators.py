"""Compare ELBO estimators: gradient variance, training curves over seeds, time per step (`--help` lists the flags)."""

import sys

from startup import guard_imports, imports_done

guard_imports()
from pyro_vae.cli.compare import main  # noqa: E402

imports_done()

if __name__ == "__main__":
    sys.exit(main())
