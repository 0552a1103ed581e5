"""Your own networks, data and guides: trained, resumed exactly and loaded back; wrong shapes and bad data
refused in one line before training; the built-in convolutional networks for any image shape."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import pyro_vae
from pyro_vae.cli.train import main
from pyro_vae.core import analytic
from pyro_vae.core.estimators import ELBOLoss, build_elbo
from pyro_vae.core.model import VAE
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.training.checkpoint.values import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
SHAPE, Z = (3, 8, 8), 3
QUIET = dict(progress=False, log=lambda line: None)


def images(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, 8, 8) colour gradients in [0, 1]: structured, not noise, and not MNIST-shaped."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, 8)
    return (torch.rand(n, 3, 1, 1, generator=g) * (ramp.view(1, 1, 8, 1) + ramp.view(1, 1, 1, 8)) / 2).clamp(0, 1)


DATA = (images(60), images(20, seed=1))


class Encoder(nn.Module):
    def __init__(self, outputs: int = 2 * Z):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 4, 2, 1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, outputs))

    def forward(self, x):
        assert x.shape[1:] == SHAPE  # the user's encoder sees images of the data's shape
        loc, log_scale = self.net(x).chunk(2, dim=-1)
        return loc, log_scale.exp()


class Decoder(nn.Module):
    def __init__(self, pixels: int = math.prod(SHAPE)):
        super().__init__()
        self.net, self.pixels = nn.Sequential(nn.Linear(Z, 16), nn.Tanh(), nn.Linear(16, pixels)), pixels

    def forward(self, z):
        assert z.ndim == 2  # one batch dimension, whatever the particles
        logits = self.net(z)
        return logits.reshape(-1, *SHAPE) if self.pixels == math.prod(SHAPE) else logits


class DiagonalGuide(nn.Module):
    """A guide written against the protocol (no forward): q = N(mu(x), diag sigma(x)^2)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(math.prod(SHAPE), 2 * Z)

    def loc_scale(self, x):
        loc, log_scale = self.net(x).chunk(2, dim=-1)
        return loc, log_scale.exp()

    def sample(self, x, eps):
        loc, scale = self.loc_scale(x)
        z = loc + scale * eps
        return z, analytic.diagonal_normal_log_prob(z, loc, scale)

    def kl_to_prior(self, x):
        return analytic.kl_diagonal_normal_standard_normal(*self.loc_scale(x))

    def location(self, x):
        return self.loc_scale(x)[0]


def config(out: Path, epochs: int, **settings) -> pyro_vae.TrainConfig:
    model = ModelConfig(**{"z_dim": Z, "likelihood": "continuous-bernoulli", **settings.pop("model", {})})
    return pyro_vae.TrainConfig(model=model, epochs=epochs, batch_size=16, out=str(out), threads=1, **settings)


def test_own_networks_on_own_images_resume_exactly_and_load_back(tmp_path):
    torch.manual_seed(0)  # the user's modules are built from the seed the user sets
    straight = pyro_vae.train(config(tmp_path / "a", 2), data=DATA, encoder=Encoder(), decoder=Decoder(), **QUIET)
    torch.manual_seed(0)
    pyro_vae.train(config(tmp_path / "b", 1), data=DATA, encoder=Encoder(), decoder=Decoder(), **QUIET)
    resumed = pyro_vae.resume(tmp_path / "b", epochs=2, data=DATA, encoder=Encoder(), decoder=Decoder(), **QUIET)
    for (name, a), b in zip(straight.vae.state_dict().items(), resumed.vae.state_dict().values()):
        assert torch.equal(a, b), name
    assert [m["test_loss"] for m in straight.metrics] == [m["test_loss"] for m in resumed.metrics]
    assert straight.config.model.image_shape == SHAPE and straight.config.dataset == "user"
    assert "encoder=test_own_parts.Encoder; decoder=test_own_parts.Decoder" == straight.config.model.user_parts
    loaded = pyro_vae.load_run(tmp_path / "b", data=DATA, encoder=Encoder(), decoder=Decoder())
    assert all(torch.equal(a, b) for a, b in zip(loaded.vae.state_dict().values(), resumed.vae.state_dict().values()))
    assert loaded.evaluate(samples=5).negative_elbo == pytest.approx(resumed.evaluate(samples=5).negative_elbo)
    assert loaded.sample(4).shape == (4, math.prod(SHAPE))


def test_a_run_of_own_modules_names_them_when_they_are_missing(tmp_path):
    pyro_vae.train(config(tmp_path / "run", 1), data=DATA, encoder=Encoder(), decoder=Decoder(), **QUIET)
    with pytest.raises(
        CheckpointError, match=r"your own modules \(encoder=test_own_parts.Encoder; .*decoder=\.\.\."
    ) as caught:
        pyro_vae.load_run(tmp_path / "run", data=DATA, encoder=Encoder())
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="pass them again"):
        pyro_vae.resume(tmp_path / "run", epochs=2, encoder=Encoder(), decoder=Decoder(), **QUIET)
    with pytest.raises(CheckpointError, match="built-in networks"):
        pyro_vae.train(config(tmp_path / "builtin", 1), data=DATA, **QUIET)
        pyro_vae.load_run(tmp_path / "builtin", data=DATA, decoder=Decoder())


@pytest.mark.parametrize(
    "parts, message",
    [
        (
            dict(encoder=Encoder(outputs=2 * Z + 2)),
            r"a tuple of a tensor of shape \(2, 4\), .*two tensors of shape \(2, 3\)",
        ),
        (dict(decoder=Decoder(pixels=10)), r"your decoder \(Decoder\) returned a tensor of shape \(2, 10\)"),
        (dict(encoder=nn.Flatten()), r"your encoder \(Flatten\) returned a tensor of shape \(2, 192\)"),
        (dict(encoder=Encoder(), guide=DiagonalGuide()), "an encoder or a guide, not both"),
    ],
)
def test_a_part_of_the_wrong_shape_is_refused_before_training(tmp_path, parts, message):
    with pytest.raises(ConfigError, match=message) as caught:
        pyro_vae.train(config(tmp_path / "run", 1), data=DATA, **parts, **QUIET)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    "data, message",
    [
        ((DATA[0] * float("nan"), DATA[1]), "NaN or infinite"),
        (
            (DATA[0] * 255, DATA[1]),
            r"your train images have pixels in \[0, 254.252\]; expected values in \[0, 1\] \(8-bit images: divide",
        ),
        ((DATA[0], images(5)[:, :2]), r"differ in shape: \(3, 8, 8\) and \(2, 8, 8\)"),
        ((DATA[0], torch.empty(0, 3, 8, 8)), "N >= 1"),
        ("images", "a \\(train, test\\) pair"),
    ],
)
def test_bad_data_is_refused_in_one_line(tmp_path, data, message):
    with pytest.raises((DataError, ConfigError), match=message):
        pyro_vae.train(config(tmp_path / "run", 1), data=data, **QUIET)


def test_grey_images_under_a_bernoulli_likelihood_without_binarization_are_refused(tmp_path):
    grey = config(tmp_path / "run", 1, model=dict(likelihood="bernoulli"), binarization="none")
    with pytest.raises(DataError, match="needs pixels that are 0 or 1"):
        pyro_vae.train(grey, data=DATA, **QUIET)


def test_a_torch_dataset_of_pairs_trains_and_keeps_its_labels(tmp_path):
    pairs = torch.utils.data.TensorDataset(DATA[0], torch.arange(60) % 4)
    run = pyro_vae.train(config(tmp_path / "run", 1), data=(pairs, DATA[1]), encoder=Encoder(), **QUIET)
    assert run.dataset.train_labels is not None and run.dataset.image_shape == SHAPE


@pytest.mark.parametrize("estimator, particles", [("trace", 1), ("meanfield", 1), ("iwae", 3)])
def test_a_guide_without_forward_gives_the_same_loss_as_the_built_in_one(estimator, particles):
    """The user's guide (sample, log q, closed-form KL) and the built-in diagonal guide on the same weights
    give the same loss and gradients from the same noise, float64."""
    mine = VAE(ModelConfig(x_dim=192, hidden=(), z_dim=Z), guide=DiagonalGuide()).double()
    builtin = VAE(ModelConfig(x_dim=192, hidden=(), z_dim=Z)).double()
    builtin.decoder.load_state_dict(mine.decoder.state_dict())
    builtin.q.encoder.head.load_state_dict(mine.q.net.state_dict())
    x = torch.bernoulli(DATA[0].reshape(60, -1)[:7].double())
    losses = []
    for vae in (mine, builtin):
        torch.manual_seed(3)
        loss = ELBOLoss(vae, build_elbo(estimator, particles))(x, 1.0)
        loss.backward()
        losses.append((loss.detach(), [p.grad.clone() for p in vae.parameters() if p.grad is not None]))
    torch.testing.assert_close(losses[0][0], losses[1][0], rtol=1e-12, atol=0)
    for a, b in zip(losses[0][1], losses[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_guide_without_forward_is_refused_by_the_score_function(tmp_path):
    with pytest.raises(ConfigError, match="score needs log q at any z"):
        pyro_vae.train(config(tmp_path / "run", 1, estimator="score"), data=DATA, guide=DiagonalGuide(), **QUIET)


@pytest.mark.parametrize("guide", ["diagonal", "full-covariance", "flow", "delta"])
def test_the_built_in_conv_networks_fit_any_image_shape(tmp_path, guide):
    model = dict(network="conv", channels=(4, 8), guide=guide)
    run = pyro_vae.train(config(tmp_path / "run", 1, model=model), data=DATA, **QUIET)
    assert run.vae.decoder(torch.zeros(2, 5, Z)).shape == (2, 5, 192) and math.isfinite(run.metrics[-1]["test_loss"])


def test_conv_network_needs_room_to_halve_the_image():
    with pytest.raises(
        ConfigError, match="3 halvings need sides of at least 8 pixels, and the images are \\(3, 6, 6\\)"
    ):
        ModelConfig(x_dim=108, image_shape=(3, 6, 6), network="conv", channels=(4, 8, 8))


def test_conv_network_from_the_command_line_trains_and_resumes(tmp_path):
    args = ["--network", "conv", "--channels", "4,8", "--z-dim", "2", "--no-progress", "--threads", "1"]
    assert main([*args, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    assert main(["--resume", str(tmp_path / "run"), "--epochs", "2", "--no-progress"]) == 0
    run = pyro_vae.load_run(tmp_path / "run")
    assert len(run.metrics) == 2 and run.config.model.network == "conv" and run.config.model.image_shape == (28, 28)


def test_the_documented_example_runs(tmp_path):
    """docs/examples/own_model_and_data.py, as the README shows it, at a small size."""
    script = ROOT / "docs" / "examples" / "own_model_and_data.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path / "own"), "--images", "300", "--epochs", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        env={"OMP_NUM_THREADS": "1", **__import__("os").environ},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "after 2 epochs" in done.stdout and "loaded:" in done.stdout


class Cast(nn.Module):
    """A user's part whose outputs come out as `dtype`, or NaN from the batch size `nan_from` on."""

    def __init__(self, part: nn.Module, dtype: torch.dtype = torch.float32, nan_from: int | None = None):
        super().__init__()
        self.part, self.dtype, self.nan_from = part, dtype, nan_from

    def forward(self, x):
        out = self.part(x)
        if self.nan_from is not None and x.shape[0] >= self.nan_from:
            out = out * float("nan")
        return tuple(o.to(self.dtype) for o in out) if isinstance(out, tuple) else out.to(self.dtype)


class NoZ(nn.Module):
    def forward(self, z):
        return torch.zeros(z.shape[0], 5) @ torch.zeros(4, 5)  # built for another z: shapes cannot multiply


@pytest.mark.parametrize(
    "parts, message",
    [
        *[(dict(encoder=Cast(Encoder(), kind)), f"your encoder (Cast) returned {kind} (loc, scale) for torch.float32")
          for kind in (torch.float64, torch.int64, torch.complex64)],
        *[(dict(decoder=Cast(Decoder(), kind)), f"your decoder (Cast) returned {kind} logits for torch.float32")
          for kind in (torch.float64, torch.int64, torch.complex64)],
        (dict(decoder=NoZ()), "the decoder failed on two training images (z of shape (1, 2, 3)): RuntimeError: "),
        (dict(guide=nn.Linear(3, 3)), "your guide (Linear) lacks sample, kl_to_prior, location"),
        (dict(encoder=lambda x: x), "your encoder must be a torch.nn.Module, got a function"),
        (dict(decoder=Cast(Decoder(), nan_from=1)), "the decoder gave NaN or infinite logits on two training images"),
        (dict(decoder=Cast(Decoder(), nan_from=3)), "Pyro's checks refused the model's values: Expected parameter"),
    ],
)  # fmt: skip
def test_a_users_part_of_the_wrong_kind_is_refused_in_one_line_naming_it(parts, message, tmp_path):
    """Outputs of another dtype, a decoder built for another z_dim, a module that is no guide, a NaN on the
    first step: one line naming the part, never a raw error from inside PyTorch or Pyro's tensor dump."""
    config = pyro_vae.TrainConfig(model=ModelConfig(z_dim=Z), epochs=1, batch_size=30, out=str(tmp_path / "run"))
    with pytest.raises(ConfigError) as refused:
        pyro_vae.train(config, data=DATA, **parts, **QUIET)
    assert message in str(refused.value) and "\n" not in str(refused.value)


class Items(torch.utils.data.Dataset):
    """A Dataset whose items are `kind` and whose __len__ says `length`, over five real images."""

    def __init__(self, kind: str, length: int = 5):
        self.kind, self.length, self.images = kind, length, images(5)

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        return {"image": self.images[i]} if self.kind == "dict" else self.images[i]


@pytest.mark.parametrize(
    "train, message",
    [
        (Items("dict"), "the train Dataset's items must be images or (image, label) pairs, got a dict"),
        (Items("image", length=9), "the train Dataset's __len__ says 9 images, but item 5 cannot be read (IndexError"),
        (Items("image", length=10**9), "the test images (1,000,000,000 of 192 pixels, as float32) needs about"),
        (torch.zeros(192).expand(10**9, 192), "the train images (1,000,000,000 of 192 pixels, as float32) needs"),
    ],
)
def test_a_dataset_that_lies_or_holds_no_images_is_refused_in_one_line_at_once(train, message):
    """Items that are dicts, a __len__ past the items, 10^9 images (a Dataset's length, or a zero-stride
    tensor that holds one row): refused before anything is copied, not std::bad_alloc after 35 s. (A training
    Dataset of 10^9 images is streamed instead, and its unreadable items refused as it reads them: below.)"""
    train, test = (images(5), train) if isinstance(train, Items) and train.length == 10**9 else (train, images(5))
    with pytest.raises(pyro_vae.PyroVAEError) as refused:
        pyro_vae.from_arrays(train, test)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_training_dataset_of_a_billion_images_is_streamed_and_an_unreadable_item_stops_in_one_line(
    tmp_path, monkeypatch
):
    """10^9 images as float32 rows would need 715 GiB: the Dataset is streamed (nothing copied). Trained (on a
    length of 1,000 under a memory limit that streams it too), the first batch that reaches an item past the
    five there stops the run with the Dataset's own error in one line."""
    dataset = pyro_vae.from_arrays(Items("image", length=10**9), images(5))
    assert dataset.streamed and dataset.train.shape == (10**9, 192)
    monkeypatch.setenv("PYRO_VAE_MEMORY_LIMIT", "600K")  # 1,000 images of 192 pixels: 750 KiB as float32
    config = pyro_vae.TrainConfig(model=ModelConfig(z_dim=Z, hidden=(16,)), epochs=1, batch_size=30,
                                  out=str(tmp_path / "run"))  # fmt: skip
    with pytest.raises(pyro_vae.PyroVAEError, match=r"^reading your streamed training images failed: .*index") as e:
        pyro_vae.train(config, data=(Items("image", length=1000), images(5)), encoder=Encoder(), decoder=Decoder(),
                       **QUIET)  # fmt: skip
    assert "\n" not in str(e.value)


def test_a_run_of_own_parts_given_images_of_another_shape_is_refused_naming_them(tmp_path):
    out = tmp_path / "run"
    pyro_vae.train(pyro_vae.TrainConfig(model=ModelConfig(z_dim=Z), epochs=1, out=str(out)), data=DATA,
                   encoder=Encoder(), decoder=Decoder(), **QUIET)  # fmt: skip
    other = (torch.bernoulli(torch.rand(20, 10, 10)), torch.bernoulli(torch.rand(10, 10, 10)))
    words = "was trained on images of 192 pixels"
    with pytest.raises(ConfigError, match=f"{words}.*the images given have 100 \\(shape \\(10, 10\\)\\)"):
        pyro_vae.load_run(out, data=other, encoder=Encoder(), decoder=Decoder())
    with pytest.raises(ConfigError, match=f"{words}; the images given have 100"):
        pyro_vae.resume(out, epochs=2, data=other, encoder=Encoder(), decoder=Decoder(), **QUIET)


def test_one_training_image_and_one_test_image_train_and_draw_every_figure(tmp_path):
    out = tmp_path / "run"
    one = (images(1), images(1, seed=1))
    pyro_vae.train(pyro_vae.TrainConfig(model=ModelConfig(z_dim=2), epochs=1, out=str(out)), data=one, **QUIET)
    assert {"loss_curve.png", "reconstructions.png", "samples.png", "latent.png", "summary.json"} <= {
        path.name for path in out.iterdir()
    }
