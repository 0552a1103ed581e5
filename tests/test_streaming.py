"""A training Dataset too large for memory, streamed batch by batch: the same numbers as in memory, exact
resume, each image read once an epoch, and what it cannot do refused in one line."""

from __future__ import annotations

import pytest
import torch

import pyro_vae
from pyro_vae import data, memory
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.training.run import weights_digest

SMALL = pyro_vae.ModelConfig(hidden=(32,), z_dim=2)
LIMIT = "8M"  # the default digits' 4,000 training images need 12.0 MiB as float32; the test split 3.1 MiB


class Digits(torch.utils.data.Dataset):
    """The default digits as a torch Dataset of (28 x 28 image, label) pairs, remembering what was read."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels, self.read = images, labels, []

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        self.read.append(index)
        return self.images[index].reshape(28, 28), int(self.labels[index])


def digits() -> tuple[Digits, Digits]:
    default = data.load_default()
    return Digits(default.train, default.train_labels), Digits(default.test, default.test_labels)


def train(tmp_path, name: str, images: tuple, **settings) -> pyro_vae.TrainedRun:
    config = pyro_vae.TrainConfig(**{**dict(epochs=2, threads=1, model=SMALL, out=str(tmp_path / name)), **settings})
    return pyro_vae.train(config, data=images, progress=False, log=lambda line: None)


def test_a_dataset_over_the_memory_limit_is_streamed_and_trains_as_in_memory(tmp_path, monkeypatch):
    in_memory = train(tmp_path, "memory", digits())
    assert not in_memory.dataset.streamed
    monkeypatch.setenv(memory.LIMIT_ENV, LIMIT)
    lines = []
    config = pyro_vae.TrainConfig(epochs=2, threads=1, model=SMALL, out=str(tmp_path / "streamed"))
    streamed = pyro_vae.train(config, data=digits(), progress=False, log=lines.append)
    assert streamed.dataset.streamed
    assert "training images streamed from your Dataset by 2 workers (as float32 they need 12.0 MiB" in lines[0]
    assert weights_digest(in_memory.vae) == weights_digest(streamed.vae)
    assert [m["test_loss"] for m in streamed.metrics] == [m["test_loss"] for m in in_memory.metrics]


def test_a_streamed_run_resumes_exactly(tmp_path, monkeypatch):
    straight = train(tmp_path, "straight", digits())
    monkeypatch.setenv(memory.LIMIT_ENV, LIMIT)
    train(tmp_path, "resumed", digits(), epochs=1)
    resumed = pyro_vae.resume(tmp_path / "resumed", epochs=2, progress=False, log=lambda line: None, data=digits())
    assert resumed.dataset.streamed and weights_digest(straight.vae) == weights_digest(resumed.vae)


def test_each_training_image_is_read_once_an_epoch_and_the_rest_not_at_all(tmp_path, monkeypatch):
    """Read in the training process (data_workers 0, so that the reads can be counted): the first image (its
    shape), the two the model is checked on, then every training image once per epoch, in the epoch's order."""
    monkeypatch.setenv(memory.LIMIT_ENV, LIMIT)
    images = digits()
    train(tmp_path, "counted", images, epochs=2, data_workers=0)
    epochs = images[0].read[3:]
    assert images[0].read[:3] == [0, 0, 1] and len(epochs) == 2 * 4000
    assert sorted(epochs[:4000]) == sorted(epochs[4000:]) == list(range(4000)) and epochs[:4000] != epochs[4000:]


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(binarization="static"), "static binarization draws the whole training split once"),
        (dict(model=pyro_vae.ModelConfig(guide="local", hidden=(32,), z_dim=2)), "are streamed"),
        (dict(labels_kept=100), "are streamed"),
    ],
)
def test_what_needs_every_image_at_once_is_refused_for_a_streamed_split(tmp_path, monkeypatch, settings, message):
    monkeypatch.setenv(memory.LIMIT_ENV, LIMIT)
    with pytest.raises((ConfigError, DataError), match=message) as raised:
        train(tmp_path, "refused", digits(), **settings)
    assert "\n" not in str(raised.value)


def test_a_streamed_batch_of_bad_pixels_stops_the_run_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV, LIMIT)
    train_set, test_set = digits()
    train_set.images = train_set.images * 255  # 8-bit values where pixels in [0, 1] are expected
    with pytest.raises(DataError, match=r"streamed training images have pixels in \[0, 255\].*divide them by 255"):
        train(tmp_path, "bad", (train_set, test_set), data_workers=0)


@pytest.mark.parametrize("text, size", [("2000", 2000), ("500M", 500 * 2**20), ("1.5G", 3 * 2**29), ("4k", 4096)])
def test_the_memory_limit_reads_as_bytes_or_with_a_unit(text, size, monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV, text)
    assert memory.parse_bytes(text) == size and memory.available_bytes() <= size


def test_a_memory_limit_that_is_not_a_size_is_refused():
    with pytest.raises(ConfigError, match=r"PYRO_VAE_MEMORY_LIMIT is 'lots'; give a size such as"):
        memory.parse_bytes("lots")
