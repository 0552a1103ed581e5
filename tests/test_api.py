"""The Python API, TensorBoard, the sampling command and the small things a user meets first."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import pyro_vae
from pyro_vae import files
from pyro_vae.cli.sample import main as sample_main
from pyro_vae.cli.train import main
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.errors import ConfigError
from pyro_vae.evaluation import plots
from pyro_vae.training.checkpoint import store
from pyro_vae.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--hidden", "32", "--z-dim", "2", "--no-progress", "--threads", "1"]


def readme_quick_start() -> str:
    """The Python block under the README's "Python quick start" heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_quick_start_runs_as_written_and_again(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # a second run makes a second folder; nothing is refused or overwritten
        exec(compile(readme_quick_start(), "README.md", "exec"), {})
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 2
    for folder in folders:
        run = pyro_vae.load_run(folder)
        assert run.finished and len(run.metrics) == run.config.epochs
        assert not run.vae.training
    assert capsys.readouterr().out.strip()


def test_an_occupied_out_is_refused_naming_the_config_field(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"^out names .*taken, which already exists and is not empty"):
        pyro_vae.train(TrainConfig(epochs=1, out=str(tmp_path / "taken")), progress=False)
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_the_package_exposes_what_a_user_needs():
    names = {"train", "load_run", "TrainConfig", "ModelConfig", "VAE", "TrainedRun", "log_likelihood", "negative_elbo"}
    assert names <= set(dir(pyro_vae)) and names <= set(pyro_vae.__all__)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("api") / "run"
    assert main(SMALL + ["--epochs", "2", "--tensorboard", "--out", str(out)]) == 0
    return out


def test_configs_round_trip_through_json(trained):
    config = TrainConfig.from_json(trained / "config.json")
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert TrainConfig(**json.loads((trained / "config.json").read_text())) == config  # nested dict rebuilt
    assert config.model == ModelConfig(hidden=(32,), z_dim=2, image_shape=(28, 28))  # the shape from the data


@pytest.mark.parametrize(
    "values, message",
    [
        ({"lrr": 0.1}, "unknown setting(s) in config: 'lrr'"),
        ({"lr": "0.1"}, "config.lr must be a number, got '0.1'"),
        ({"epochs": 2.5}, "config.epochs must be a whole number, got 2.5"),
        ({"model": {"z_dimm": 2}}, "unknown setting(s) in config.model: 'z_dimm'"),
        ({"model": {"hidden": [64, "a"]}}, "config.model.hidden must be a list of whole numbers"),
        ({"data_dir": 3}, "config.data_dir must be a string or null, got 3"),
        ([1, 2], "config must be a JSON object of settings"),
    ],
)
def test_a_config_with_unknown_or_mistyped_keys_is_refused_in_one_line(values, message):
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict(values)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_config_json_records_resolved_values(trained, tmp_path, monkeypatch):
    config = json.loads((trained / "config.json").read_text())
    assert (config["binarization"], config["out"], config["data_dir"]) == ("dynamic", str(trained), None)
    monkeypatch.chdir(tmp_path)
    assert main(SMALL + ["--epochs", "1"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "config.json").read_text())["out"] == str(Path("runs") / run.name)


def test_load_run_gives_back_the_trained_model(trained):
    run = pyro_vae.load_run(trained)
    assert run.finished and [m["epoch"] for m in run.metrics] == [1, 2] and not run.vae.training
    checkpoint = store.load(trained / "checkpoint.pt").model_state
    assert all(torch.equal(v, checkpoint[k]) for k, v in run.vae.state_dict().items())
    evaluation = run.evaluate(samples=5)
    assert evaluation.negative_elbo == pytest.approx(run.metrics[-1]["test_loss"], rel=1e-9)
    assert evaluation.log_likelihood.value > -evaluation.negative_elbo - 5  # L_5 above the one-sample ELBO, up to noise
    originals, reconstructions = run.reconstruct([0, 3])
    assert originals.shape == reconstructions.shape == (2, 784)
    assert run.sample(5).shape == (5, 784) and run.interpolate(0, 3, steps=4).shape == (4, 784)
    annealed = run.ais(steps=20, chains=4, images=10)
    assert annealed.bound == "lower" and annealed.per_image.shape == (10,) and annealed.per_image.isfinite().all()
    assert annealed.value == run.ais(steps=20, chains=4, images=10).value  # the seed fixes every draw


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda run: run.sample(-1), "n must be a whole number from 1"),
        (lambda run: run.sample(10**12), "n must be a whole number from 1 to 10,000"),
        (lambda run: run.sample(3, seed=1.5), "seed must be a whole number"),
        (lambda run: run.sample(3, seed=2**64), "seed must be a whole number from 0 to"),
        (lambda run: run.reconstruct([10**9]), "test_indices[0] must be a whole number from 0 to 999"),
        (lambda run: run.reconstruct([-1]), "test_indices[0] must be a whole number from 0"),
        (lambda run: run.reconstruct([]), "non-empty list"),
        (lambda run: run.reconstruct([1.5]), "test_indices[0] must be a whole number"),
        (lambda run: run.reconstruct(None), "non-empty list"),
        (lambda run: run.interpolate(0, 10**9), "b must be a whole number"),
        (lambda run: run.interpolate(0.5, 1), "a must be a whole number"),
        (lambda run: run.interpolate(0, 1, steps=-1), "steps must be a whole number from 2"),
        (lambda run: run.interpolate(0, 1, steps=10**10), "steps must be a whole number from 2 to 1,000"),
        (lambda run: run.evaluate(samples=2, images=0), "images must be a whole number from 1 to 1,000"),
        (lambda run: run.evaluate(images=-1), "images must be a whole number"),
        (lambda run: run.evaluate(samples=10**9), "samples must be a whole number from 1 to 1,000,000"),
        (lambda run: run.ais(steps=0), "AIS steps must be a whole number"),
        (lambda run: run.ais(seed=1.5), "seed must be a whole number from 0"),
        (lambda run: run.ais(seed=-1), "seed must be a whole number from 0"),
        (lambda run: pyro_vae.resume(run.path, epochs=2.5), "epochs must be a whole number, got 2.5"),
    ],
)
def test_a_trained_run_refuses_bad_arguments_in_one_line(trained, call, message):
    """The API's own bounds (the command line's): a ValueError with one line naming the argument, never an
    allocator error, a wrapped negative index or a run of days."""
    run = pyro_vae.load_run(trained)
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        call(run)
    assert isinstance(raised.value, ConfigError) and "\n" not in str(raised.value)


def test_load_run_of_an_interrupted_run_says_it_is_not_finished(trained, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("checkpoint.pt", "config.json", "metrics.jsonl"):
        (copy / name).write_bytes((trained / name).read_bytes())
    assert not pyro_vae.load_run(copy).finished


def test_tensorboard_event_files_hold_the_tags(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {
        "loss/train",
        "loss/test",
        "elbo/test_reconstruction",
        "elbo/test_kl",
        "settings/lr",
        "settings/kl_weight",
    } <= set(tags["scalars"])
    assert {"images/reconstructions", "images/samples"} <= set(tags["images"])
    assert any(tag.startswith("config") for tag in tags["tensors"])
    assert [e.step for e in events.Scalars("loss/test")] == [1, 2]
    metrics = files.read_jsonl(trained / "metrics.jsonl")
    assert events.Scalars("elbo/test_kl")[-1].value == pytest.approx(metrics[-1]["test_kl"], rel=1e-6)


def test_log_px_reaches_tensorboard_when_estimated(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(SMALL + ["--epochs", "1", "--eval-samples", "5", "--tensorboard", "--out", str(out)]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert "log_px/test" in events.Tags()["scalars"]


def test_sample_command_draws_prior_samples_reconstructions_and_an_interpolation(trained, tmp_path, capsys):
    out = tmp_path / "pictures"
    assert (
        sample_main(
            [
                str(trained),
                "--prior",
                "9",
                "--reconstruct",
                "0",
                "5",
                "--interpolate",
                "1",
                "7",
                "--steps",
                "5",
                "--gif",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == ["interpolation-1-7.gif", "interpolation-1-7.png", "prior-seed0.png", "reconstructions.png"]
    from PIL import Image

    gif = Image.open(out / "interpolation-1-7.gif")
    assert gif.n_frames == 8  # 5 there, 3 back
    assert str(out / "prior-seed0.png") in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--reconstruct", "1000"], "test images are numbered 0 to 999"),
        (["--steps", "1", "--interpolate", "0", "1"], "--steps must be a whole number from 2 to 1,000, got 1"),
    ],
)
def test_sample_command_refuses_bad_input_in_one_line(trained, tmp_path, capsys, args, message):
    assert sample_main([str(trained), "--out", str(tmp_path / "p"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "script, name",
    [
        ("pyro_vae.cli.train", "pyro-vae-train"),
        ("pyro_vae.cli.evaluate", "pyro-vae-evaluate"),
        ("pyro_vae.cli.sample", "pyro-vae-sample"),
    ],
)
def test_console_scripts_print_their_own_names(script, name):
    executable = Path(sys.executable).parent / name
    if not executable.exists():
        pytest.skip(f"{name} is not installed next to {sys.executable} (pip install -e . installs it)")
    result = subprocess.run([str(executable), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith(f"usage: {name} ")


def test_flag_abbreviations_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["--epoch", "1"])
    assert "unrecognized arguments: --epoch 1" in capsys.readouterr().err


def test_resuming_a_finished_run_says_so_and_changes_nothing(trained, capsys):
    before = {p: p.read_bytes() for p in trained.iterdir() if p.is_file()}
    assert main(["--resume", str(trained), "--no-progress"]) == 0
    assert "is a finished run (2 of 2 epochs); nothing to do" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in trained.iterdir() if p.is_file()} == before


def test_latent_plot_names_fashion_classes_and_draws_unlabelled_data_without_warnings(tmp_path):
    from pyro_vae.data import Dataset

    images = torch.zeros(3, 784)
    assert Dataset("fashion-mnist", images, images, None, None).class_names[0] == "T-shirt/top"
    assert Dataset("mnist", images, images, None, None).class_names[9] == "9"
    means = torch.randn(50, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.latent(means, None, tmp_path / "unlabelled.png")
        plots.latent(
            means,
            torch.arange(50) % 10,
            tmp_path / "fashion.png",
            Dataset("fashion-mnist", images, images, None, None).class_names,
        )
    assert (tmp_path / "unlabelled.png").stat().st_size > 0 and (tmp_path / "fashion.png").stat().st_size > 0


@pytest.mark.parametrize(
    "call, kind, message",
    [
        (lambda: pyro_vae.TrainConfig.from_dict({"lr": 10**400}), ValueError, "lr must be a number in (0, 10]"),
        (lambda: pyro_vae.TrainConfig(model="x"), TypeError, "model must be a ModelConfig"),
        (lambda: pyro_vae.train("not a config"), TypeError, "train() needs a TrainConfig, got str"),
        (lambda: pyro_vae.train(pyro_vae.TrainConfig(), checkpoint={}), TypeError, "checkpoint must be a Checkpoint"),
        (lambda: pyro_vae.TrainConfig(epochs=float("nan")), ValueError, "epochs must be"),
        (lambda: pyro_vae.TrainConfig(batch_size=2.5), ValueError, "batch_size must be a whole number, got 2.5"),
        (lambda: pyro_vae.ModelConfig(z_dim=2.5), ValueError, "z_dim must be a whole number, got 2.5"),
        (lambda: pyro_vae.ModelConfig(hidden=(400, 2.5)), ValueError, "hidden must be a whole number, got 2.5"),
        (lambda: pyro_vae.TrainConfig(compile=1), ValueError, "compile must be true or false, got 1"),
        (
            lambda: pyro_vae.TrainConfig.from_dict({"lr": "x" * 10**7}),
            ValueError,
            "config.lr must be a number, got 'xx",
        ),
    ],
)
def test_the_api_refuses_values_of_the_wrong_kind_or_range_in_one_line(call, kind, message):
    """Of the wrong kind (2.5 where a whole number belongs) or out of range, in one short line: a bad value is
    quoted in at most a few dozen characters."""
    with pytest.raises(kind, match=re.escape(message)) as raised:
        call()
    assert isinstance(raised.value, ConfigError) and "\n" not in str(raised.value) and len(str(raised.value)) < 200


@pytest.mark.parametrize("device", ["bogus", "meta", 3.5])
def test_load_run_refuses_a_device_it_cannot_use(trained, device):
    with pytest.raises(ConfigError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
        pyro_vae.load_run(trained, device=device)


@pytest.mark.parametrize(
    "make, python_words, flag_words",
    [
        (lambda: TrainConfig(estimator="iwae", beta=0.5), "leave beta at 1 and kl_warmup at 0",
         "leave --beta at 1 and --kl-warmup at 0"),
        (lambda: TrainConfig(lr_schedule="paper", lr_final=1e-4), "leave out lr_final", "leave out --lr-final"),
        (lambda: ModelConfig(learn_sigma=True), "learn_sigma applies only to likelihood gaussian",
         "--learn-sigma applies only to --likelihood gaussian"),
    ],
)  # fmt: skip
def test_library_errors_name_config_fields_and_the_command_line_names_flags(make, python_words, flag_words):
    from pyro_vae.cli.arguments import with_flags

    with pytest.raises(ConfigError) as error:
        make()
    assert python_words in str(error.value) and "--" not in str(error.value) and "@" not in str(error.value)
    assert flag_words in with_flags(error.value)
