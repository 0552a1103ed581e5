"""Started by tests/test_distributed.py as `torchrun --nproc-per-node 2 tests/two_rank_program.py OUT EPOCHS`:
the three-site program of tests/test_programs.py trained on two ranks (gloo) into OUT, or resumed there to
EPOCHS when OUT holds a run."""

from __future__ import annotations

import sys
from pathlib import Path

from test_programs import DATA, program_parts

import pyro_vae


def main(out: Path, epochs: int) -> None:
    quiet = dict(progress=False, log=lambda line: None)
    if (out / "checkpoint.pt").exists():
        pyro_vae.resume(out, epochs=epochs, data=DATA, **program_parts(modules=True), **quiet)
    else:
        config = pyro_vae.TrainConfig(epochs=epochs, batch_size=32, eval_samples=10, threads=1, out=str(out))
        pyro_vae.train(config, data=DATA, **program_parts(modules=True), **quiet)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
