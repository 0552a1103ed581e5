"""A checkpoint's payload checked against what its own config builds, before anything uses it: the keys, the
config, the model's and the optimizers' tensors (names, shapes, dtypes, finite values, Adam's settings), the
progress counters (ranges, a true permutation) and the generators' states. Every refusal is one
CheckpointError naming the file and what is wrong.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from pyro_vae.core.model import VAE
from pyro_vae.core.parts import Parts
from pyro_vae.core.program import built_model
from pyro_vae.core.programs import program_parts
from pyro_vae.errors import PyroVAEError
from pyro_vae.training.checkpoint.progress_checks import check_adam_steps, check_generators, check_progress
from pyro_vae.training.checkpoint.values import CheckpointError, check_tensor, is_count
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.optimizer import SVIOptimizer

KEYS = {  # of a payload (local_optimizer_state only for the local guide)
    "config",
    "model_state",
    "optimizer_state",
    "rng",
    "rng_other_ranks",
    "world_size",
    "progress",
    "epoch",
    "step",
}


def check(checkpoint: object, path: Path, parts: Parts = Parts()) -> None:
    """Everything in a checkpoint's payload against what its own config (and the user's `parts`) builds:
    the keys, then the config, model, optimizers, progress and generators. Raises CheckpointError on the
    first difference, naming `path`."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint's dict")
    keys = set(checkpoint)
    missing, extra = KEYS - keys, keys - KEYS - {"local_optimizer_state"}
    if missing or extra:
        raise CheckpointError(
            f"{path} is not a complete checkpoint: "
            + "; ".join(
                part
                for part in (
                    f"missing {', '.join(sorted(map(str, missing)))}" if missing else "",
                    f"unexpected {', '.join(sorted(map(str, extra)))}" if extra else "",
                )
                if part
            )
        )
    config = _config(checkpoint["config"], path)
    vae = _model(config, checkpoint["model_state"], path, parts)
    _check_tensors(
        checkpoint["model_state"], {k: (v.shape, v.dtype) for k, v in vae.state_dict().items()}, f"{path}: model_state"
    )
    table = vae.q.table.weight if vae.is_local else None
    built = SVIOptimizer([nn.Parameter(torch.zeros(1))], config.lr, (config.adam_beta1, 0.999), config.adam_eps,
                         sparse=None if table is None else nn.Parameter(torch.zeros(1, 1)))  # fmt: skip
    dense = [p for p in vae.parameters() if p is not table]
    _check_adam(checkpoint["optimizer_state"], dense, built.dense.param_groups[0], f"{path}: optimizer_state")
    if vae.is_local:
        if "local_optimizer_state" not in checkpoint:
            raise CheckpointError(f"{path}: a local-guide run's checkpoint lacks local_optimizer_state")
        where = f"{path}: local_optimizer_state"
        _check_adam(checkpoint["local_optimizer_state"], [table], built.sparse.param_groups[0], where)
    elif "local_optimizer_state" in checkpoint:
        raise CheckpointError(
            f"{path} holds a local_optimizer_state, but its config's guide ({config.model.guide}) has none"
        )
    check_progress(checkpoint, config, path)
    check_adam_steps(checkpoint["optimizer_state"]["state"], checkpoint["progress"]["step"], path)
    check_generators(checkpoint, path)


def _config(values: object, path: Path) -> TrainConfig:
    if not isinstance(values, dict) or not isinstance(values.get("model"), dict):
        raise CheckpointError(f'{path}: its config is not a dict of settings with the model\'s nested under "model"')
    try:
        return TrainConfig.from_dict(values)
    except PyroVAEError as error:
        raise CheckpointError(f"{path}: its config is refused: {error}") from None


def _model(config: TrainConfig, state: object, path: Path, parts: Parts) -> VAE:
    """The VAE the config describes, to compare the checkpoint with: with the user's parts where the run had
    its own (refused, naming them, if they are not given); else on the meta device (shapes and dtypes
    without memory) where the guide allows, else on the CPU, once the parameters the config describes
    are known to be no more than the file holds (a tampered config cannot make this allocate more)."""
    parts = program_parts(config.program, parts, config.model.x_dim, config.seed, config.program_options)
    recorded = config.model.user_parts
    if parts.missing(recorded) or (parts.description() and not recorded):
        raise CheckpointError(
            f"{path} was trained with your own modules ({recorded}); load or resume it from Python with new "
            f"instances of the same classes: {', '.join(f'{name}=...' for name in parts.missing(recorded))}"
            if recorded
            else f"{path} was trained with the built-in networks; load it without encoder, decoder, guide or model"
        )
    if recorded:
        return built_model(config.model, parts)
    probe = replace(config.model, guide="diagonal") if config.model.guide == "flow" else config.model
    try:
        with torch.device("meta"):  # Pyro's autoregressive flows read their masks' values, which meta tensors lack
            model = VAE(probe)
        if probe is config.model:
            return model
        described = sum(p.numel() for p in model.parameters())
        held = sum(t.numel() for t in state.values() if isinstance(t, torch.Tensor)) if isinstance(state, dict) else 0
        if described > held:
            raise CheckpointError(
                f"{path}: its config describes more parameters ({described:,}) than the file holds ({held:,})"
            )
        return VAE(config.model)
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(f"{path}: its config describes no buildable model ({type(error).__name__})") from None


def _check_tensors(state: object, expected: dict[str, tuple[torch.Size, torch.dtype]], where: str) -> None:
    """`state` has exactly the expected names, each a finite tensor of the expected shape and dtype."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{where} is a {type(state).__name__}, not a dict of tensors")
    missing, extra = set(expected) - set(state), set(state) - set(expected)
    if missing or extra:
        raise CheckpointError(
            f"{where} does not match the config's model: missing {sorted(missing)}, unexpected "
            f"{sorted(map(str, extra))}"
        )
    for name, (shape, dtype) in expected.items():
        check_tensor(state[name], shape, dtype, f"{where}[{name!r}]")


def _check_adam(state: object, parameters: list[torch.Tensor], built: dict, where: str) -> None:
    """A torch Adam (or SparseAdam) state_dict for exactly `parameters`: one group listing them in order, with
    the settings of the group `built` for the run's config (betas, eps, no weight decay, amsgrad, ...: an
    altered one would silently change training) and a finite learning rate >= 0; per parameter a step >= 0 and
    moments of its shape (the second non-negative), all finite."""
    if not isinstance(state, dict) or set(state) != {"state", "param_groups"}:
        raise CheckpointError(f"{where} is not an optimizer's state (a dict of state and param_groups)")
    groups = state["param_groups"]
    if (
        not isinstance(groups, list)
        or len(groups) != 1
        or not isinstance(groups[0], dict)
        or groups[0].get("params") != list(range(len(parameters)))
    ):
        raise CheckpointError(f"{where}: its parameter groups do not match the config's model")
    _check_group_settings(groups[0], built, where)
    moments = state["state"]
    if not isinstance(moments, dict) or not set(moments) <= set(range(len(parameters))):
        raise CheckpointError(f"{where}: its per-parameter states do not match the config's model")
    for index, entry in moments.items():
        if not isinstance(entry, dict) or set(entry) != {"step", "exp_avg", "exp_avg_sq"}:
            raise CheckpointError(f"{where}: parameter {index}'s state is not Adam's (step, exp_avg, exp_avg_sq)")
        step = entry["step"]  # Adam: a float32 scalar tensor; SparseAdam (the local guide's table): an int
        if not is_count(step):
            check_tensor(step, (), torch.float32, f"{where}: parameter {index}'s step")
            if step < 0:
                raise CheckpointError(f"{where}: parameter {index}'s step is negative")
        for name in ("exp_avg", "exp_avg_sq"):
            check_tensor(
                entry[name], parameters[index].shape, parameters[index].dtype, f"{where}: parameter {index}'s {name}"
            )
        if (entry["exp_avg_sq"] < 0).any():
            raise CheckpointError(f"{where}: parameter {index}'s exp_avg_sq has negative values")


def _check_group_settings(group: dict, built: dict, where: str) -> None:
    """The group's settings are those the run's config builds; its lr a finite number >= 0 (the schedule's)."""
    lr = group.get("lr")
    if not isinstance(lr, float) or not 0 <= lr < float("inf"):
        raise CheckpointError(f"{where}: its parameter group's lr is missing or not a finite number >= 0: {lr!r}")
    for key in sorted((set(group) | set(built)) - {"params", "lr"}):
        value, expected = group.get(key, "missing"), built.get(key, "absent")
        if isinstance(value, list):
            value = tuple(value)
        if type(value) is not type(expected) or value != expected:
            raise CheckpointError(
                f"{where}: its parameter group's {key} is {value!r}, but the run's config builds {expected!r}"
            )
