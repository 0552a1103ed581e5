"""Pyro's own M2 script (`examples/vae/ss_vae_M2.py` of pyro's repository) on a local MNIST folder, to set this
project's M2 beside the numbers the tutorial's script gives where you run it:

    git clone https://github.com/pyro-ppl/pyro PYRO
    python benchmarks/pyro_tutorial_m2.py PYRO/examples/vae --data-dir DATA_DIR -- --seed 0 -n 50 --aux-loss \\
        -alm 46 -enum parallel -sup 100 -zd 50 -hl 500 -lr 0.00042 -b1 0.95 -bs 100

Everything after `--` goes to the script. It runs on a copy in a temporary folder with three edits that leave
its training alone (`patched`): MNIST is read from DATA_DIR/MNIST/raw (unpacked into the copy, where the
script's dataset class looks for it) instead of pyro's download mirror, and the `visdom` import (used only
with --visualize) and the assertion that pyro is 1.9.1 are dropped. Its log lines (test accuracy each epoch)
are printed as it goes.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DATA_ROOT = "root = get_data_directory(__file__)"
EDITS = {  # file: ((text, replacement), ...), each text found exactly once
    "ss_vae_M2.py": (
        ("from visdom import Visdom\n", "Visdom = None  # edited: visdom only serves --visualize\n"),
        ('    assert pyro.__version__.startswith("1.9.1")\n', ""),
    ),
    "utils/mnist_cached.py": ((DATA_ROOT, "root = {root!r}  # edited: a local MNIST folder"),),
}


def patched(text: str, edits: tuple[tuple[str, str], ...], root: str) -> str:
    """`text` with each (old, new) edit made; an old text that is not there exactly once is an error (the
    script has changed under this harness)."""
    for old, new in edits:
        if text.count(old) != 1:
            raise SystemExit(f"pyro_tutorial_m2: expected one {old.strip()!r} in the script, found {text.count(old)}")
        text = text.replace(old, new.format(root=root))
    return text


def copy_with_mnist(examples: Path, data_dir: Path, folder: Path) -> Path:
    """The examples folder copied into `folder` and edited, MNIST's four files unpacked where the script's
    dataset class (`MNISTCached`) reads them."""
    copy = Path(shutil.copytree(examples, folder / "vae"))
    raw = folder / "data" / "MNISTCached" / "raw"
    raw.mkdir(parents=True)
    for packed in sorted((data_dir / "MNIST" / "raw").glob("*-ubyte.gz")):
        (raw / packed.stem).write_bytes(gzip.decompress(packed.read_bytes()))
    for name, edits in EDITS.items():
        path = copy / name
        path.write_text(patched(path.read_text(), edits, str(folder / "data")))
    return copy


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="after --: the script's own arguments", allow_abbrev=False
    )
    p.add_argument("examples", type=Path, help="pyro's examples/vae folder")
    p.add_argument("--data-dir", type=Path, required=True, help="folder holding MNIST/raw")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, script_args = p.parse_args(argv[:split]), argv[split + 1 :]
    if not (args.examples / "ss_vae_M2.py").is_file():
        p.error(f"{args.examples} holds no ss_vae_M2.py (give pyro's examples/vae folder)")
    if len(list((args.data_dir / "MNIST" / "raw").glob("*-ubyte.gz"))) != 4:
        p.error(f"{args.data_dir}/MNIST/raw does not hold MNIST's four .gz files")
    with tempfile.TemporaryDirectory() as folder:
        copy = copy_with_mnist(args.examples, args.data_dir, Path(folder))
        log = str(Path(folder) / "ss_vae.log")
        return subprocess.run([sys.executable, "-u", "ss_vae_M2.py", *script_args, "-log", log], cwd=copy).returncode


if __name__ == "__main__":
    sys.exit(main())
