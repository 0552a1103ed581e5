"""The user's own images as a Dataset (`from_arrays`): tensors, NumPy arrays or torch Datasets of images or
(image, label) pairs, checked in one line each, and a training Dataset too large for memory streamed."""

from __future__ import annotations

import torch

from pyro_vae import memory
from pyro_vae.data.dataset import USER_DATA, Dataset
from pyro_vae.data.streaming import StreamedImages
from pyro_vae.errors import DataError, first_line


def from_arrays(train: object, test: object, name: str = USER_DATA) -> Dataset:
    """A dataset of the user's own images: `train` and `test` each a tensor or NumPy array of shape
    (N, *image_shape), or a `torch.utils.data.Dataset` whose items are images or (image, label) pairs.
    Pixels must lie in [0, 1] (checked by `check_pixels` before training); any image shape is kept. A training
    Dataset too large for memory as float32 rows is streamed (`streaming.StreamedImages`): read per batch,
    its labels not read."""
    (train_x, train_y), (test_x, test_y) = _as_images(train, "train"), _as_images(test, "test")
    train_shape = train_x.image_shape if isinstance(train_x, StreamedImages) else tuple(train_x.shape[1:])
    if train_shape != tuple(test_x.shape[1:]):
        raise DataError(f"the train and test images differ in shape: {train_shape} and {tuple(test_x.shape[1:])}")
    rows = lambda x: x if isinstance(x, StreamedImages) else x.reshape(x.shape[0], -1).float()  # noqa: E731
    return Dataset(name, rows(train_x), rows(test_x), train_y, test_y, image_shape=train_shape or (1,))


def _as_images(images: object, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images, labels or None) as tensors on the CPU, from a tensor, an array or a torch Dataset; refused in
    one line where they are not images, or would not fit in memory as float32 rows (checked before any copy)."""
    if isinstance(images, torch.utils.data.Dataset) and not isinstance(images, torch.Tensor):
        return _dataset_images(images, split)
    try:
        x = torch.as_tensor(images).cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise DataError(f"the {split} images must be a tensor, an array or a Dataset: {first_line(error)}") from None
    if x.ndim < 2 or x.shape[0] == 0 or not (x.is_floating_point() or x.dtype in (torch.uint8, torch.bool)):
        raise DataError(
            f"the {split} images must be numbers of shape (N, *image_shape) with N >= 1, "
            f"got {x.dtype} of shape {tuple(x.shape)}"
        )
    _check_fits(x.shape[0], x[0].numel(), split)  # a zero-stride array of 10^9 rows holds little until copied
    return x, None


def _dataset_images(images: torch.utils.data.Dataset, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A torch Dataset's items (images, or (image, label) pairs) stacked, once its length and first item say
    that they fit; an item of another kind, or a length the Dataset does not hold, refused in one line."""
    try:
        count = len(images)
    except TypeError:
        raise DataError(f"the {split} Dataset has no length (__len__); give a map-style Dataset") from None
    if not isinstance(count, int) or count < 1:
        raise DataError(f"the {split} Dataset's images must be one or more, got a length of {count!r:.40}")
    first = _item(images, 0, count, split)
    pairs = isinstance(first, (tuple, list))
    image = _image(first, pairs, split)
    if split == "train" and not memory.fits(count * image.numel() * 4):  # too large to hold: read per batch
        return StreamedImages(images, count, tuple(image.shape) or (1,), pairs), None
    _check_fits(count, image.numel(), split)
    items = [first, *(_item(images, i, count, split) for i in range(1, count))]
    x = [_image(item, pairs, split) for item in items]
    if len({tuple(t.shape) for t in x}) > 1:
        raise DataError(f"the {split} Dataset's images must all be of one shape")
    try:
        labels = torch.as_tensor([int(item[1]) for item in items]) if pairs else None
    except (TypeError, ValueError, IndexError) as error:
        raise DataError(f"the {split} Dataset's labels must be whole numbers ({first_line(error, 80)})") from None
    return torch.stack(x).cpu(), labels


def _image(item: object, pairs: bool, split: str) -> torch.Tensor:
    """An item's image as a tensor: the item itself, or its first entry where the items are pairs."""
    try:
        return torch.as_tensor(item[0] if pairs else item)
    except (TypeError, ValueError, RuntimeError, IndexError, KeyError) as error:
        raise DataError(
            f"the {split} Dataset's items must be images or (image, label) pairs, got a {type(item).__name__} "
            f"({first_line(error, 80)})"
        ) from None


def _item(images: torch.utils.data.Dataset, index: int, count: int, split: str) -> object:
    try:
        return images[index]
    except (IndexError, KeyError) as error:
        raise DataError(
            f"the {split} Dataset's __len__ says {count:,} images, but item {index:,} cannot be read "
            f"({type(error).__name__}: {first_line(error, 80)})"
        ) from None


def _check_fits(count: int, pixels: int, split: str) -> None:
    """count images of `pixels` pixels as float32 rows within the memory available."""
    memory.check_fits(
        count * pixels * 4,
        f"the {split} images ({count:,} of {pixels:,} pixels, as float32)",
        "give fewer images (a subset), or smaller ones",
    )
