"""A training split read from the user's torch Dataset batch by batch, for images that do not fit in memory
as float32 rows: worker processes read each batch's items ahead of the step (a `DataLoader` over the epoch's
batches, pinned memory and a non-blocking copy when training on a GPU), and each process of a torchrun job
reads only its share of every batch.

It stands where a tensor of training images stands (`Dataset.train`): its `shape`, `device`, `dtype`, and
`images[rows]` (the rows read at once, in this process); `batches` is the prefetching path the training loop
takes. The epoch's permutation and the batches are the in-memory path's, and no draw is taken from torch's
generators, so a streamed run gives the numbers of the same run in memory, and resumes exactly.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from pyro_vae.errors import DataError


class StreamedImages:
    """The images of `source` (a map-style torch Dataset of images or (image, label) pairs, `count` of them, of
    `image_shape`) at `rows` of it (all by default), read by `workers` processes, as float32 rows of pixels."""

    def __init__(
        self,
        source: torch.utils.data.Dataset,
        count: int,
        image_shape: tuple[int, ...],
        pairs: bool,
        rows: torch.Tensor | None = None,
        device: torch.device = torch.device("cpu"),
        workers: int = 2,
    ):
        self.source, self.count, self.image_shape, self.pairs = source, count, image_shape, pairs
        self.rows = torch.arange(count) if rows is None else rows
        self.device, self.workers = torch.device(device), workers
        self.dtype, self.ndim = torch.float32, 2

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), math.prod(self.image_shape))

    def __len__(self) -> int:
        return len(self.rows)

    def with_options(self, **changes: object) -> "StreamedImages":
        """The same images with other `rows` (a subset: numbers into these rows), `device` or `workers`."""
        rows = changes.pop("rows", None)
        options = dict(rows=self.rows if rows is None else self.rows[rows], device=self.device, workers=self.workers)
        return StreamedImages(self.source, self.count, self.image_shape, self.pairs, **{**options, **changes})

    def to(self, device: torch.device | str) -> "StreamedImages":
        return self.with_options(device=torch.device(device))

    def __getitem__(self, index: slice | torch.Tensor) -> torch.Tensor:
        """The images at `index` (a slice or tensor of numbers into these rows), read here, on the device."""
        chosen = self.rows[index.cpu() if isinstance(index, torch.Tensor) else index]
        return read_rows(self.source, chosen.tolist(), self.pairs).to(self.device)

    def batches(self, shards: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Each of `shards` (numbers into these rows) read by the workers ahead of its step, on the device."""
        pinned = self.device.type == "cuda"
        loader = DataLoader(
            _Rows(self.source, self.pairs),
            batch_sampler=[self.rows[shard.cpu()].tolist() for shard in shards],
            num_workers=self.workers,
            collate_fn=stacked_rows,
            pin_memory=pinned,
            generator=torch.Generator(),  # its seed drawn from here: nothing from torch's own generator
        )
        try:
            for x in loader:
                yield x.to(self.device, non_blocking=pinned)
        except DataError:
            raise
        except Exception as error:  # raised by the Dataset, in a worker (its traceback in the message) or here
            last = [line for line in str(error).splitlines() if line.strip()][-1:] or [type(error).__name__]
            raise DataError(f"reading your streamed training images failed: {last[0].strip()[:300]}") from None


class _Rows(torch.utils.data.Dataset):
    """The items of `source` as flattened float32 images (the label of a pair dropped)."""

    def __init__(self, source: torch.utils.data.Dataset, pairs: bool):
        self.source, self.pairs = source, pairs

    def __getitem__(self, index: int) -> torch.Tensor:
        item = self.source[index]
        return torch.as_tensor(item[0] if self.pairs else item).reshape(-1).float()

    def __len__(self) -> int:
        return len(self.source)


def stacked_rows(rows: list[torch.Tensor]) -> torch.Tensor:
    """A batch of rows as one (N, D) tensor, its pixels checked to be finite and in [0, 1]."""
    x = torch.stack(rows)
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise DataError(
            f"your streamed training images have pixels in [{x.min().item():g}, {x.max().item():g}] or not finite; "
            "expected values in [0, 1]" + (" (8-bit images: divide them by 255)" if x.max() > 1 else "")
        )
    return x


def read_rows(source: torch.utils.data.Dataset, rows: list[int], pairs: bool) -> torch.Tensor:
    """The items `rows` of `source`, read in this process, as a checked (N, D) batch."""
    items = _Rows(source, pairs)
    return stacked_rows([items[i] for i in rows])
