"""A dataset as tensors on the training device, and what is done to one: binarization (dynamic, static),
the validation split held out, the local guide's fixed subsets, the pixel checks, and the user's own images
(`from_arrays`).

Every dataset is one tensor per split of shape (N, D) (rows are flattened images, D = 784 for the MNIST
family), held on the training device: float32 pixels in [0, 1], or for 8-bit images the training split as
uint8 (0-255, a quarter of the memory), whose batches `pixels` turns into the same float32 values; a training
batch is an index slice of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterator

import torch

from pyro_vae.data.streaming import StreamedImages
from pyro_vae.errors import DataError

USER_DATA = "user"  # the dataset name of images given in Python (`from_arrays`), not read from files
BINARIZATIONS = ("dynamic", "static", "none")
IMAGE_SHAPE = (28, 28)
# Seeds of the fixed binarization draws: constant, so test figures compare across runs and estimators.
TEST_BINARIZATION_SEED = 0
STATIC_BINARIZATION_SEED = 1
SUBSET_SEED = 2  # the local guide's fixed subsets of data points
VALIDATION_SEED = 3  # which training images are held out for validation
VALIDATION_BINARIZATION_SEED = 4
LABELS_SEED = 5  # which training labels a semi-supervised run keeps (`keep_labels`)
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


@dataclass(frozen=True)
class Dataset:
    """A train/test pair of image tensors (N, D) in [0, 1], each row one image of `image_shape` flattened
    (D = 784 for the MNIST family), with labels where the data has them."""

    name: str
    train: torch.Tensor | StreamedImages  # streamed: a torch Dataset too large for memory, read per batch
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
        """True when every pixel of both splits is exactly 0 or 1 (0 or 255 in 8 bits)."""
        return all(bool(((t == 0) | (t == top_value(t))).all()) for t in (self.train, self.test))

    @property
    def eight_bit(self) -> bool:
        """Whether the training split is held as uint8 (0-255)."""
        return self.train.dtype == torch.uint8

    @property
    def streamed(self) -> bool:
        """Whether the training split is read from the user's Dataset batch by batch (`streaming`)."""
        return isinstance(self.train, StreamedImages)

    def train_batches(self, shards: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The training images at each of `shards` (row numbers), in turn: indexed in memory, or read ahead by
        the streaming workers."""
        return (
            self.train.batches(shards)
            if self.streamed
            else (torch.index_select(self.train, 0, rows) for rows in shards)
        )

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

    def evaluation_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
        """The splits an epoch is evaluated on, by name: "test", and "validation" where one is held out, each
        as (images, labels, rows), None where the data has no labels or no rows (validation images have none)."""
        splits = {"test": (self.test, self.test_labels, self.test_rows)}
        if self.validation is not None:
            splits["validation"] = (self.validation, self.validation_labels, None)
        return splits

    def first_test(self, count: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The first `count` test images (all by default) and their rows (None without rows)."""
        return self.test[:count], None if self.test_rows is None else self.test_rows[:count]


def pixels(x: torch.Tensor) -> torch.Tensor:
    """Images as float32 pixels in [0, 1]: 8-bit ones (uint8) divided by 255 (in float32, as the loaders
    divide: the same values bit for bit), float ones as they are."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


def top_value(x: torch.Tensor) -> int:
    """The value of a white pixel in `x`: 255 in 8 bits, else 1."""
    return 255 if x.dtype == torch.uint8 else 1


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli draw per pixel: x_bin ~ Bernoulli(x), so E[x_bin] = x (the grey level). On a CPU, for
    float32 and float64 pixels, as x_bin = 1[u < x] with u ~ U[0, 1) from `torch.rand`: `torch.bernoulli`'s own
    draw bit for bit (one uniform per pixel from the same generator outputs, in the same order, leaving the
    generator in the same state; `tests/test_binarize.py`), in about half its time."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return torch.bernoulli(x, generator=generator)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype)
    return torch.lt(u, x, out=torch.empty(x.shape, dtype=x.dtype))


def fixed_binarization(x: torch.Tensor, seed: int) -> torch.Tensor:
    """A reproducible Bernoulli draw of `x`, the same for a given seed on any device."""
    generator = torch.Generator().manual_seed(seed)
    return binarize(x.cpu(), generator).to(x.device)


def prepare(dataset: Dataset, binarization: str) -> Dataset:
    """Apply the binarization to the splits once: `static` draws the train split once, and every
    mode but `none` draws the test split once with a constant seed. `dynamic` training batches
    are drawn afresh in the training loop. The test and validation splits become float32 pixels; the
    training split keeps its kind (uint8 8-bit images stay uint8, 0 or 255 once statically binarized)."""
    if binarization not in BINARIZATIONS:
        raise DataError(f"unknown binarization {binarization!r}; choose one of: {', '.join(BINARIZATIONS)}")
    dataset = replace(dataset, test=pixels(dataset.test), validation=_pixels_or_none(dataset.validation))
    if binarization == "none":
        return dataset
    train = dataset.train
    if binarization == "static" and dataset.streamed:
        raise DataError(
            "static binarization draws the whole training split once, and yours is streamed (it does not fit in "
            "memory): use dynamic binarization, or binarize your images yourself"
        )
    if binarization == "static":  # drawn from the float pixels; kept in the training split's own kind
        train = fixed_binarization(pixels(train), STATIC_BINARIZATION_SEED).to(train.dtype) * top_value(train)
    validation = (
        None if dataset.validation is None else fixed_binarization(dataset.validation, VALIDATION_BINARIZATION_SEED)
    )
    return replace(
        dataset, train=train, test=fixed_binarization(dataset.test, TEST_BINARIZATION_SEED), validation=validation
    )


def _pixels_or_none(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else pixels(x)


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
    train = dataset.train.with_options(rows=kept) if dataset.streamed else dataset.train[kept]
    return replace(
        dataset,
        train=train,
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


def keep_labels(dataset: Dataset, count: int, seed: int = LABELS_SEED) -> Dataset:
    """The dataset with `count` of its training labels kept, count / classes of each class (a fixed draw by
    `seed`), and the others marked missing (-1): the semi-supervised setting (M2's 100 labels: 10 a digit)."""
    labels = dataset.train_labels
    classes = 0 if labels is None else int(labels.max()) + 1
    if labels is None or count % classes or count > labels.shape[0]:
        raise DataError(
            f"keeping {count} labels needs a training split with labels, and a number of them that its "
            f"{classes} classes share equally"
        )
    g = torch.Generator().manual_seed(seed)
    kept = torch.full_like(labels, -1)
    for c in range(classes):
        members = torch.nonzero(labels == c).flatten()
        if members.shape[0] < count // classes:
            raise DataError(f"class {c} has {members.shape[0]} training images, fewer than {count // classes} to label")
        chosen = members[torch.randperm(members.shape[0], generator=g)[: count // classes]]
        kept[chosen] = c
    return replace(dataset, train_labels=kept)


def with_rows(dataset: Dataset) -> Dataset:
    """The dataset with every image numbered, for a guide with parameters per image (the local guide): the
    training images are rows 0..N-1 of its table, the test images rows N..N+T-1. Batches carry these rows
    (`training.step.Batch`), so only the guide reads them."""
    n, t = dataset.train.shape[0], dataset.test.shape[0]
    rows = torch.arange(n + t, device=dataset.train.device)
    return replace(dataset, train_rows=rows[:n], test_rows=rows[n:])


def check_pixels(dataset: Dataset) -> None:
    """Every split a (N, D) tensor of its images' D pixels, every pixel finite and inside [0, 1] (uint8
    splits: 8-bit images, 0-255)."""
    pixels = math.prod(dataset.image_shape)
    for split in ("train", "test"):
        x, name = getattr(dataset, split), f"{dataset.name} {split}"
        name = f"your {split} images" if dataset.name == USER_DATA else name
        if x.ndim != 2 or x.shape[1] != pixels or x.shape[0] == 0:
            raise DataError(
                f"{name}: shape {tuple(x.shape)}; expected (N, {pixels}) for images of shape {dataset.image_shape}, N >= 1"
            )
        if x.dtype == torch.uint8 or isinstance(x, StreamedImages):  # 0-255 is [0, 1]; streamed: checked per batch
            continue
        if not torch.isfinite(x).all():
            raise DataError(f"{name} hold NaN or infinite pixels")
        if x.min() < 0 or x.max() > 1:
            raise DataError(
                f"{name} have pixels in [{x.min().item():g}, {x.max().item():g}]; expected values in [0, 1]"
                + (" (8-bit images: divide them by 255)" if x.max() > 1 and x.max() <= 255 else "")
            )
