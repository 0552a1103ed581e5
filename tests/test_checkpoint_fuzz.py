"""Hostile checkpoints: a few hundred damaged, tampered and crafted variants of one real checkpoint, each of
which must be refused with one line naming the file (no traceback, no native crash, no code run, never
advice to load unsafely), while the untouched file and a valid mid-epoch variant load."""

from __future__ import annotations

import copy
import hashlib
import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyro_vae.cli.evaluate import main as evaluate_main
from pyro_vae.cli.train import main
from pyro_vae.training.checkpoint import store
from pyro_vae.training.checkpoint.progress_checks import PROGRESS
from pyro_vae.training.checkpoint.resume import load_run_checkpoint
from pyro_vae.training.checkpoint.values import CheckpointError
from pyro_vae.training.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--hidden", "16", "--z-dim", "2", "--no-progress", "--threads", "1"]


class Exploit:
    """Pickled, it would run a shell command on load (with weights_only=False)."""

    marker: Path

    def __reduce__(self):
        return (os.system, (f"touch {Exploit.marker}",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fuzz") / "run"
    assert main(SMALL + ["--epochs", "1", "--out", str(out)]) == 0
    return out


def payload_of(path: Path) -> dict:
    """The payload of a checked checkpoint file, as the file holds it (format_version and the state)."""
    return {"format_version": store.FORMAT, **store.load(path).to_dict()}


def write_payload(path: Path, obj: object) -> None:
    """A well-formed file (true length and checksum) around `obj`: what only the checks inside can refuse."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    body = buffer.getvalue()
    path.write_bytes(f"pyro-vae checkpoint 2 {len(body)} {hashlib.sha256(body).hexdigest()}\n".encode() + body)


def refused(folder: Path) -> str:
    """Loading `folder`'s checkpoint is refused with one clean line; that line."""
    with pytest.raises(CheckpointError) as caught:
        load_run_checkpoint(folder)
    message = str(caught.value)
    assert "\n" not in message and "weights_only=False" not in message and "Traceback" not in message
    assert str(folder / "checkpoint.pt") in message
    return message


def structural_variants(good: dict) -> list[tuple[str, object]]:
    """(name, object) pairs, each a checkpoint changed in one way that a true checksum does not reveal."""
    variants: list[tuple[str, object]] = [
        (f"top level {type(v).__name__}", v) for v in ([], None, 3, "checkpoint", torch.zeros(3), {})
    ]

    def changed(name: str, change) -> None:
        c = copy.deepcopy(good)
        change(c)
        variants.append((name, c))

    for key in sorted(store.REQUIRED):
        changed(f"without {key}", lambda c, key=key: c.pop(key))
    changed("an extra key", lambda c: c.update(surprise=1))
    for version in (0, 3, "2", None):
        changed(f"format_version {version!r}", lambda c, v=version: c.update(format_version=v))
    changed("config a list", lambda c: c.update(config=[1]))
    changed("config with an unknown key", lambda c: c["config"].update(colour="red"))
    changed("config epochs a string", lambda c: c["config"].update(epochs="ten"))
    changed("config without the model", lambda c: c["config"].pop("model"))
    changed("config with a huge model", lambda c: c["config"]["model"].update(hidden=[10**6]))
    changed("config with z_dim 10**30", lambda c: c["config"]["model"].update(z_dim=10**30))
    changed("config of another guide", lambda c: c["config"]["model"].update(guide="full-covariance"))
    for name, tensor in good["model_state"].items():
        changed(
            f"{name} transposed or grown",
            lambda c, n=name, t=tensor: c["model_state"].update(
                {
                    n: t.t().contiguous()
                    if t.dim() == 2 and t.shape[0] != t.shape[1]
                    else torch.cat([t.reshape(-1), t.reshape(-1)[:1]])
                }
            ),
        )
        changed(f"{name} float64", lambda c, n=name: c["model_state"].update({n: c["model_state"][n].double()}))
        changed(f"{name} a list", lambda c, n=name: c["model_state"].update({n: c["model_state"][n].tolist()}))
        if tensor.is_floating_point():
            for bad in (float("nan"), float("inf")):
                changed(f"{name} with {bad}", lambda c, n=name, b=bad: c["model_state"][n].view(-1).__setitem__(0, b))
    changed("model_state missing a tensor", lambda c: c["model_state"].pop(next(iter(c["model_state"]))))
    changed("model_state with an extra tensor", lambda c: c["model_state"].update(extra=torch.zeros(1)))
    for index in good["optimizer_state"]["state"]:

        def entry(c, i=index):
            return c["optimizer_state"]["state"][i]

        changed(f"Adam {index} exp_avg of the wrong shape", lambda c, e=entry: e(c).update(exp_avg=torch.zeros(7, 3)))
        changed(f"Adam {index} exp_avg_sq negative", lambda c, e=entry: e(c).update(exp_avg_sq=-e(c)["exp_avg_sq"] - 1))
        changed(f"Adam {index} exp_avg NaN", lambda c, e=entry: e(c)["exp_avg"].view(-1).__setitem__(0, float("nan")))
        changed(f"Adam {index} step -1", lambda c, e=entry: e(c).update(step=torch.tensor(-1.0)))
        changed(f"Adam {index} step a string", lambda c, e=entry: e(c).update(step="1"))
        changed(f"Adam {index} without exp_avg", lambda c, e=entry: e(c).pop("exp_avg"))
    changed("Adam with a state for a parameter it lacks", lambda c: c["optimizer_state"]["state"].update({99: {}}))
    changed(
        "Adam with two parameter groups",
        lambda c: c["optimizer_state"]["param_groups"].append(copy.deepcopy(c["optimizer_state"]["param_groups"][0])),
    )
    changed("Adam's group missing a parameter", lambda c: c["optimizer_state"]["param_groups"][0]["params"].pop())
    changed("Adam's lr a string", lambda c: c["optimizer_state"]["param_groups"][0].update(lr="fast"))
    for key, value in [
        ("betas", ("a", "b")), ("betas", (0.9,)), ("betas", (5.0, -3.0)), ("eps", -1.0), ("eps", float("nan")),
        ("weight_decay", "x"), ("weight_decay", 1e6), ("amsgrad", True), ("maximize", True),
        ("differentiable", True), ("fused", False), ("lr", float("inf")), ("capturable", True),
    ]:  # fmt: skip
        group = lambda c: c["optimizer_state"]["param_groups"][0]  # noqa: E731
        changed(f"Adam's {key} {value!r}", lambda c, k=key, v=value, g=group: g(c).update({k: v}))
    rng = lambda c: c["rng"]  # noqa: E731
    changed(
        "torch generator state of random bytes",
        lambda c: rng(c).update(torch=torch.randint(0, 256, (5056,), dtype=torch.uint8)),
    )
    changed("numpy has_gauss a string", lambda c: rng(c)["numpy"].__setitem__(3, "x"))
    changed("numpy has_gauss 10**30", lambda c: rng(c)["numpy"].__setitem__(3, 10**30))
    changed("python state version 99", lambda c: rng(c)["python"].__setitem__(0, 99))
    changed("python state version a string", lambda c: rng(c)["python"].__setitem__(0, "x"))
    changed("Adam without weight_decay", lambda c: c["optimizer_state"]["param_groups"][0].pop("weight_decay"))
    changed("Adam's state a list", lambda c: c.update(optimizer_state=[]))
    for name, value in [
        ("epoch", 99),
        ("epoch", -1),
        ("epoch", "1"),
        ("epoch", 1.5),
        ("epoch", True),
        ("step", -1),
        ("step", 10**30),
        ("batch", -2),
        ("images", -5),
        ("skipped", None),
        ("loss_sum", float("nan")),
        ("loss_sum", float("-inf")),
        ("seconds", float("inf")),
        ("metrics", []),
        ("metrics", None),
        ("metrics", [{"epoch": 3}]),
        ("permutation", torch.zeros(4000, dtype=torch.int64)),
        ("permutation", torch.arange(4000.0)),
        ("permutation", torch.arange(4000).reshape(2, 2000)),
        ("permutation", [0, 1]),
        ("colour", "red"),
    ]:
        changed(f"progress {name} = {str(value)[:20]}", lambda c, n=name, v=value: c["progress"].update({n: v}))
    changed(
        "progress batch past the epoch's end",
        lambda c: c["progress"].update(permutation=torch.randperm(4000), batch=999),
    )
    changed("progress a list", lambda c: c.update(progress=[]))
    changed("epoch disagreeing with progress", lambda c: c.update(epoch=0))
    changed("step disagreeing with progress", lambda c: c.update(step=c["step"] + 1))
    changed("rng a list", lambda c: c.update(rng=[]))
    changed("torch rng state cut", lambda c: c["rng"].update(torch=c["rng"]["torch"][:10]))
    changed("torch rng state int64", lambda c: c["rng"].update(torch=c["rng"]["torch"].long()))
    changed("numpy rng of another kind", lambda c: c["rng"]["numpy"].__setitem__(0, "PCG64"))
    changed("numpy rng keys cut", lambda c: c["rng"]["numpy"].__setitem__(1, c["rng"]["numpy"][1][:5]))
    changed("numpy rng position past the end", lambda c: c["rng"]["numpy"].__setitem__(2, 10**6))
    changed("python rng cut", lambda c: c["rng"].update(python=c["rng"]["python"][:2]))
    changed("python rng words cut", lambda c: c["rng"]["python"].__setitem__(1, c["rng"]["python"][1][:3]))
    changed("python rng word too large", lambda c: c["rng"]["python"].__setitem__(1, (2**40,) * 625))
    changed("cuda rng not a list", lambda c: c["rng"].update(cuda="gpu"))
    changed("world_size 0", lambda c: c.update(world_size=0))
    changed("world_size 2 without the other rank", lambda c: c.update(world_size=2))
    changed("a local optimizer state it has no use for", lambda c: c.update(local_optimizer_state=c["optimizer_state"]))
    return variants


def test_hundreds_of_damaged_and_tampered_checkpoints_are_refused_in_one_line(trained, tmp_path):
    original = (trained / "checkpoint.pt").read_bytes()
    good = payload_of(trained / "checkpoint.pt")
    folder = tmp_path / "victim"
    folder.mkdir()
    target = folder / "checkpoint.pt"
    Exploit.marker = tmp_path / "pwned"
    tried = 0

    rng = random.Random(0)
    damaged = [
        original[:cut]
        for cut in [0, 1, 10, len(original) // 2, len(original) - 1] + rng.sample(range(2, len(original) - 1), 35)
    ]
    for position in rng.sample(range(len(original)), 150):  # one flipped bit anywhere: header or payload
        flipped = bytearray(original)
        flipped[position] ^= 1 << rng.randrange(8)
        damaged.append(bytes(flipped))
    damaged += [original + b"\0", original + original, b"\0" * 100, os.urandom(5000), b"PK\x03\x04" + os.urandom(500)]
    for raw in damaged:
        target.write_bytes(raw)
        refused(folder)
        tried += 1

    for name, obj in structural_variants(good):
        write_payload(target, obj)
        try:
            refused(folder)
        except pytest.fail.Exception:
            raise AssertionError(f"the variant {name!r} was accepted or refused badly") from None
        tried += 1

    for place in ("top", "config", "model_state", "progress"):  # crafted pickles, with a true checksum
        crafted = copy.deepcopy(good) if place != "top" else Exploit()
        if place != "top":
            crafted[place] = {"x": Exploit()} if place != "progress" else {**crafted[place], "metrics": [Exploit()]}
        write_payload(target, crafted)
        assert "nothing in it ran" in refused(folder)
        tried += 1
    assert not Exploit.marker.exists()
    assert tried >= 300, tried

    target.write_bytes(original)  # the untouched file still loads, and so does a valid mid-epoch state
    assert load_run_checkpoint(folder).progress.epoch == 1
    negative = copy.deepcopy(good)  # a density's loss (continuous Bernoulli, Gaussian) can be below 0
    negative["progress"]["loss_sum"] = -3.4e6
    write_payload(target, negative)
    assert load_run_checkpoint(folder).progress.loss_sum == -3.4e6
    mid_epoch = copy.deepcopy(good)
    mid_epoch["progress"].update(permutation=torch.randperm(4000), batch=3)
    write_payload(target, mid_epoch)
    assert load_run_checkpoint(folder).progress.batch == 3


def test_the_checks_know_every_progress_field():
    from dataclasses import fields

    assert {f.name for f in fields(Progress)} == PROGRESS == {
        "epoch", "step", "batch", "permutation", "loss_sum", "images", "seconds", "skipped", "metrics"
    }  # fmt: skip


def test_a_wrong_shaped_adam_state_is_refused_before_it_reaches_the_fused_kernel(trained, tmp_path):
    """Without the checks, fused Adam wrote out of bounds (free(): invalid next size, exit 134)."""
    tampered = payload_of(trained / "checkpoint.pt")
    tampered["optimizer_state"]["state"][0]["exp_avg"] = torch.zeros(3)
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        (run / name).write_bytes((trained / name).read_bytes())
    write_payload(run / "checkpoint.pt", tampered)
    result = subprocess.run(
        [sys.executable, "scripts/svi_train.py", "--resume", str(run), "--epochs", "2", "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "exp_avg has shape (3,)" in result.stderr


@pytest.mark.parametrize(
    "tamper, message",
    [
        ("step 1e30", "counts 1e+30 Adam updates, more than the run's 16 steps"),
        ("step 2^60", "counts 1.15292e+18 Adam updates, more than the run's 16 steps"),
        ("emptied", "its optimizer_state holds no Adam moments, but the run took 16 steps"),
    ],
)
def test_an_adam_state_that_disagrees_with_the_progress_is_refused(trained, tmp_path, tamper, message):
    """Adam's count of updates against the run's steps: 1e30 or 2^60 updates after 16 steps, or no moments at
    all, would resume silently into another run (another bias correction, or none)."""
    tampered = payload_of(trained / "checkpoint.pt")
    moments = tampered["optimizer_state"]["state"]
    assert tampered["progress"]["step"] == 16 and all(float(m["step"]) == 16 for m in moments.values())
    if tamper == "emptied":
        moments.clear()
    for entry in moments.values():
        entry["step"] = torch.tensor(1e30 if tamper == "step 1e30" else 2.0**60)
    run = tmp_path / "run"
    run.mkdir()
    write_payload(run / "checkpoint.pt", tampered)
    assert message in refused(run)


@pytest.mark.parametrize("key, value", [("train_loss", None), ("test_loss", float("nan")), ("train_loss", "1")])
def test_an_epoch_record_without_its_losses_is_refused_before_training(trained, tmp_path, key, value):
    """Without the check, a resume trained an epoch, wrote its checkpoint, then crashed in the loss-curve
    figure (KeyError)."""
    tampered = payload_of(trained / "checkpoint.pt")
    record = tampered["progress"]["metrics"][0]
    if value is None:
        del record[key]
    else:
        record[key] = value
    run = tmp_path / "run"
    run.mkdir()
    write_payload(run / "checkpoint.pt", tampered)
    assert f"its progress's record of epoch 1 holds {value!r} for {key}, not a finite number" in refused(run)


def test_evaluate_refuses_a_changed_file_instead_of_printing_its_numbers(trained, tmp_path, capsys):
    """Flipped bits in a weight once printed a negative ELBO of 8e35 and exited 0."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes((trained / "config.json").read_bytes())
    raw = bytearray((trained / "checkpoint.pt").read_bytes())
    raw[-5000] ^= 0x40
    (run / "checkpoint.pt").write_bytes(bytes(raw))
    assert evaluate_main([str(run), "--samples", "2"]) == 2
    err = capsys.readouterr().err
    assert "is corrupt" in err and err.count("\n") == 1


def test_format_1_checkpoints_still_load(trained, tmp_path):
    """A run saved before checksums (a bare torch.save, format_version 1) resumes as before."""
    old = payload_of(trained / "checkpoint.pt")
    old["format_version"] = 1
    run = tmp_path / "run"
    run.mkdir()
    torch.save(old, run / "checkpoint.pt")
    loaded, good = load_run_checkpoint(run), store.load(trained / "checkpoint.pt")
    assert loaded.progress.epoch == 1 and all(
        torch.equal(v, good.model_state[k]) for k, v in loaded.model_state.items()
    )
