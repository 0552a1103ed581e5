"""The rules for resuming a run: find its checkpoint, and which settings may change (those declared with
on_resume in the config; every other one given again must match the run's)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from pyro_vae.core.model_config import ModelConfig
from pyro_vae.core.parts import Parts
from pyro_vae.errors import ConfigError
from pyro_vae.training.checkpoint import store
from pyro_vae.training.checkpoint.payload import Checkpoint
from pyro_vae.training.config import RESOLVED, RESUME_SAFE, TrainConfig, stored_backend


def load_run_checkpoint(run_dir: Path, use: str = "resume", parts: Parts = Parts()) -> Checkpoint:
    """The checked checkpoint of run folder `run_dir` (`store.load`, against the user's `parts` where
    the run had its own modules), or a message saying why there is none to `use`: no such folder, a run that
    stopped before its first checkpoint, or a folder that is not a run (with the run folders inside it)."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise ConfigError(f"cannot {use} {folder}: no such folder")
    if (folder / "checkpoint.pt").is_file():
        return store.load(folder / "checkpoint.pt", parts)
    if (folder / "config.json").is_file():
        raise ConfigError(
            f"cannot {use} {folder}: its run stopped before its first checkpoint (no checkpoint.pt); "
            "train it again (the same --out reuses the folder)"
        )
    runs = sorted(child.name for child in folder.iterdir() if (child / "config.json").is_file())
    inside = f"; run folders inside it: {', '.join(runs[:10])}{' ...' if len(runs) > 10 else ''}" if runs else ""
    raise ConfigError(f"cannot {use} {folder}: not a run folder (no config.json or checkpoint.pt){inside}")


def flatten(config_dict: dict) -> dict:
    """A TrainConfig as a dict with the model's fields beside the training ones (the CLI's names)."""
    return {**{k: v for k, v in config_dict.items() if k != "model"}, **config_dict["model"]}


def resumed_config(checkpoint: Checkpoint, given: dict) -> TrainConfig:
    """The checkpoint's configuration with the settings the user gave again; any that differ from the
    run's and are not in RESUME_SAFE stop the resume with their names and both values (those training
    resolves itself, RESOLVED, are the run's)."""
    stored = {**flatten(checkpoint.config), "compile_backend": stored_backend(checkpoint.config)}
    model_names = {f.name for f in fields(ModelConfig)}
    differing = []
    given = {name: value for name, value in given.items() if name not in RESOLVED}
    for name, value in given.items():
        old = stored.get(name)
        same = list(value) == list(old) if isinstance(value, (list, tuple)) else value == old
        if not same and name not in RESUME_SAFE:
            differing.append(f"@{name} (run: {old!r}, given: {value!r})")
    if differing:
        raise ConfigError(
            "cannot resume with settings that differ from the run's: "
            + "; ".join(differing)
            + f". Drop those settings, or start a new run; only {', '.join('@' + name for name in RESUME_SAFE)} "
            "may change on resume"
        )
    merged = {**stored, **{k: v for k, v in given.items() if k in RESUME_SAFE}}
    # --no-compile: the run's compile backend goes with it
    if not merged.get("compile", False) and "compile_backend" not in given:
        merged["compile_backend"] = TrainConfig.__dataclass_fields__["compile_backend"].default
    model = ModelConfig(**{k: v for k, v in merged.items() if k in model_names})
    return TrainConfig(model=model, **{k: v for k, v in merged.items() if k not in model_names})
