"""The SVI loop: Pyro's ELBO estimator for the loss, Adam on the module's parameters (SparseAdam on the
local guide's per-image table), per-epoch metrics, an atomic checkpoint after every epoch, and figures
at the end.

One step is what `pyro.infer.SVI.step` does (the estimator's differentiable loss, backward, an
optimizer step), with a torch optimizer over the VAE's own parameters instead of Pyro's global
param store, so runs never share state.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

import pyro
import torch
from tqdm.auto import tqdm

from . import data, evaluate, files, plots
from . import resume as resume_module
from .errors import ConfigError, DataError, PyroVAEError
from .estimators import build_elbo, loss_function
from .model import VAE, ModelConfig


class TrainingError(PyroVAEError):
    """Training diverged (a NaN or infinite loss)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; `config.json` in the run folder is this, as JSON."""

    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: str = "default"
    data_dir: str | None = None
    binarization: str | None = None  # None: dynamic for a Bernoulli likelihood, none otherwise
    estimator: str = "trace"
    num_particles: int = 1
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 10
    seed: int = 0
    threads: int | None = None  # None: PyTorch's default
    beta: float = 1.0
    kl_warmup: float = 0.0  # epochs of linear KL warm-up from 0 to beta
    cuda: bool = False
    out: str | None = None  # None: runs/<timestamp>
    checkpoint_every: int = 1  # epochs between checkpoints (one is always written at the end)
    on_nonfinite: str = "stop"  # a NaN or infinite loss or gradient: "stop" the run, or "skip" the step
    lr_final: float | None = None  # None: constant lr; else lr decays geometrically to this by the last epoch
    eval_samples: int = 0  # K of the importance-sampled test log p(x); 0: not computed
    eval_every: int | None = None  # epochs between log p(x) evaluations; None: at the end only
    validate_every_step: bool = False  # Pyro's distribution checks on every step, not only the first
    local_lr: float = 0.05  # local guide: Adam learning rate of the per-point parameters (SparseAdam)

    def __post_init__(self) -> None:
        if self.eval_samples < 0 or (self.eval_every is not None and self.eval_every < 1):
            raise ConfigError(f"--eval-samples must be 0 or more and --eval-every at least 1, got {self.eval_samples}, {self.eval_every}")
        if self.lr_final is not None and not (self.lr_final > 0 and math.isfinite(self.lr_final)):
            raise ConfigError(f"--lr-final must be a positive number, got {self.lr_final}")
        for name in ("num_particles", "batch_size", "epochs", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "local_lr"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive number, got {getattr(self, name)}")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ConfigError(f"--beta must be a positive number, got {self.beta} (beta -> 0 approaches an autoencoder)")
        if self.kl_warmup < 0:
            raise ConfigError(f"--kl-warmup must be zero or positive, got {self.kl_warmup}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.binarization is not None and self.binarization not in data.BINARIZATIONS:
            raise ConfigError(f"unknown binarization {self.binarization!r}; choose one of: {', '.join(data.BINARIZATIONS)}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"--on-nonfinite must be stop or skip, got {self.on_nonfinite!r}")
        build_elbo(self.estimator, self.num_particles)  # validates the name and particle count
        if self.estimator == "iwae" and (self.beta != 1 or self.kl_warmup > 0):
            raise ConfigError("--estimator iwae trains the importance-weighted bound, which has no separate KL "
                              "term to weight; leave --beta at 1 and --kl-warmup at 0")

    @property
    def resolved_binarization(self) -> str:
        if self.binarization is not None:
            return self.binarization
        return "dynamic" if self.model.likelihood == "bernoulli" else "none"

    def lr_decay(self, epoch: int) -> float:
        """The learning rates' factor for epoch (0-based): 1, or (lr_final / lr)^(epoch / (epochs - 1)) with
        --lr-final; it multiplies lr and the local guide's local_lr alike."""
        if self.lr_final is None or self.epochs == 1:
            return 1.0
        return (self.lr_final / self.lr) ** (epoch / (self.epochs - 1))

    def learning_rate(self, epoch: int) -> float:
        """lr for epoch (0-based): constant, or decaying geometrically to lr_final at the last epoch."""
        return self.lr * self.lr_decay(epoch)

    def evaluates_log_likelihood(self, epoch: int) -> bool:
        """Whether log p(x) is estimated after epoch (1-based): every eval_every epochs and after the last."""
        if self.eval_samples == 0:
            return False
        return epoch == self.epochs or (self.eval_every is not None and epoch % self.eval_every == 0)

    def kl_scale(self, step: int, steps_per_epoch: int) -> float:
        """beta, ramped linearly over the first `kl_warmup` epochs: beta * min(1, step / warm-up steps)."""
        if self.kl_warmup == 0:
            return self.beta
        return self.beta * min(1.0, step / (self.kl_warmup * steps_per_epoch))


def resolve_device(cuda: bool) -> torch.device:
    if not cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--cuda was given but PyTorch sees no usable CUDA GPU (torch.cuda.is_available() is False)")
    return torch.device("cuda")


def load_training_data(config: TrainConfig, device: torch.device) -> data.Dataset:
    """The dataset, checked against the likelihood's support, binarized as configured, on `device`; for
    the local guide only its fixed subsets: `local_points` training images and as many test images (or
    the whole test split, if smaller)."""
    dataset = data.load_dataset(config.dataset, config.data_dir)
    data.check_pixels(dataset)
    binarization = config.resolved_binarization
    if config.model.likelihood == "bernoulli" and binarization == "none" and not dataset.is_binary:
        raise DataError(
            f"the Bernoulli likelihood needs pixels that are 0 or 1, but {config.dataset} has grey pixels; "
            "use --binarize dynamic or static, or a likelihood for grey pixels "
            "(--likelihood continuous-bernoulli or gaussian)"
        )
    dataset = data.prepare(dataset, binarization)
    if config.model.guide == "local":
        points = config.model.local_points
        if points > dataset.train.shape[0]:
            raise ConfigError(f"--local-points {points} is more than the {dataset.train.shape[0]} training images of {config.dataset}")
        dataset = data.fixed_subset(dataset, points, min(points, dataset.test.shape[0]))
    return dataset.to(device)


def new_run_dir(out: str | None) -> Path:
    """The run folder: `out` if given (it must not hold files yet), else a new runs/<timestamp>."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path, n = Path("runs") / stamp, 1
        while path.exists():
            path, n = Path("runs") / f"{stamp}-{n}", n + 1
    else:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"output folder {path} already exists and is not empty; choose a new --out")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Interrupted(Exception):
    """The user pressed Ctrl-C; a checkpoint was written first."""


@contextmanager
def interrupt_flag() -> Iterator[list[bool]]:
    """While inside, the first Ctrl-C (SIGINT) only sets flag[0], so the loop can stop between two
    steps and write a checkpoint; a second Ctrl-C interrupts at once."""
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag[0] = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def train(
    config: TrainConfig,
    progress: bool = True,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    checkpoint: dict | None = None,
) -> Path:
    """Train a VAE with SVI as `config` says and write the run folder; returns its path.

    With a `checkpoint` (of the run in folder `config.out`, see `resume.load_run_checkpoint`), continue
    that run exactly as if it had never stopped. `summary.json` is written last, so a folder without it is an unfinished run.
    """
    device = resolve_device(config.cuda)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    dataset = load_training_data(config, device)
    local_test_points = dataset.test.shape[0] if config.model.guide == "local" else 0
    config = replace(config, model=replace(config.model, x_dim=dataset.x_dim, local_test_points=local_test_points))

    pyro.set_rng_seed(config.seed)  # seeds Python's, NumPy's and torch's generators
    vae = VAE(config.model).to(device)
    loss = loss_function(vae, build_elbo(config.estimator, config.num_particles), config.validate_every_step)
    optimizer, local_optimizer = optimizers(vae, config)
    test_rows = vae.test_rows()
    if checkpoint is None:
        out = new_run_dir(config.out)
        state = resume_module.Progress()
    else:
        out = Path(config.out)
        vae.load_state_dict(checkpoint["model_state"])
        optimizer.load_state_dict(checkpoint["optimizer_state"])
        if local_optimizer is not None:
            local_optimizer.load_state_dict(checkpoint["local_optimizer_state"])
        resume_module.set_rng_states(checkpoint["rng"])
        state = resume_module.progress_from(checkpoint)
        if state.permutation is not None:
            state.permutation = state.permutation.to(device)
        # metrics.jsonl may hold an epoch finished after the checkpoint: the checkpoint's list is the truth
        files.write_jsonl(out / "metrics.jsonl", state.metrics)
        (out / "summary.json").unlink(missing_ok=True)
    files.write_json(out / "config.json", asdict(config))

    def save() -> None:
        files.save_checkpoint(
            out / "checkpoint.pt",
            dict(config=asdict(config), model_state=vae.state_dict(), optimizer_state=optimizer.state_dict(),
                 rng=resume_module.rng_states(), progress=asdict(state), epoch=state.epoch, step=state.step,
                 **({} if local_optimizer is None else dict(local_optimizer_state=local_optimizer.state_dict()))),
        )

    def nonfinite(what: str) -> TrainingError:
        return TrainingError(
            f"the loss or its gradient became NaN or infinite at step {state.step} of {what} "
            f"(epoch {state.epoch + 1}, estimator {config.estimator}). Likely causes: a learning "
            f"rate too high (--lr {config.lr}), or for a Gaussian likelihood a --sigma too small. "
            f"{out / 'checkpoint.pt'} holds the last good state, untouched; "
            "--on-nonfinite skip skips such steps instead"
        )

    def stop(where: str) -> Interrupted:
        return Interrupted(f"interrupted {where}; checkpoint written. Resume with: python scripts/svi_train.py --resume {out}")

    dynamic = config.resolved_binarization == "dynamic"
    n_train = dataset.train.shape[0]
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    parameters = [p for p in vae.parameters() if p.requires_grad]
    verb = "training" if checkpoint is None else f"resuming at epoch {state.epoch + 1}, step {state.step}"
    log(
        f"{verb} on {dataset.name} ({n_train} train / {dataset.test.shape[0]} test images"
        + (", the local guide's fixed subsets" if vae.is_local else "")
        + f", binarization {config.resolved_binarization}) on {device}; writing {out}"
    )
    started = time.perf_counter()
    with interrupt_flag() as interrupted:
        while state.epoch < config.epochs:
            if state.permutation is None:
                state.start_epoch(torch.randperm(n_train, device=device))
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate(state.epoch)
            if local_optimizer is not None:
                for group in local_optimizer.param_groups:
                    group["lr"] = config.local_lr * config.lr_decay(state.epoch)
            bar = tqdm(total=steps_per_epoch, initial=state.batch, desc=f"epoch {state.epoch + 1}/{config.epochs}",
                       leave=False, disable=not progress)
            tic = time.perf_counter()
            loss_sum = torch.tensor(state.loss_sum, dtype=torch.float64, device=device)
            for batch_index in state.permutation.split(config.batch_size)[state.batch:]:
                x = dataset.train[batch_index]
                if dynamic:
                    x = data.binarize(x)
                state.step += 1
                vae.zero_grad(set_to_none=True)
                batch_loss = loss(x, config.kl_scale(state.step, steps_per_epoch), batch_index if vae.is_local else None)
                batch_loss.backward()
                if not _finite(batch_loss, parameters):
                    if config.on_nonfinite == "stop":
                        raise nonfinite("training")
                    state.skipped += 1
                else:
                    optimizer.step()
                    if local_optimizer is not None:
                        local_optimizer.step()
                    loss_sum += batch_loss.detach() * x.shape[0]
                    state.images += x.shape[0]
                state.batch += 1
                bar.update()
                if progress and state.batch % 20 == 0:
                    bar.set_postfix(loss=f"{loss_sum.item() / max(state.images, 1):.2f}")
                if interrupted[0]:
                    break
            bar.close()
            state.loss_sum = loss_sum.item()
            if interrupted[0] and state.batch < steps_per_epoch:
                state.seconds += time.perf_counter() - tic
                save()
                raise stop(f"at step {state.step} (epoch {state.epoch + 1})")
            if vae.is_local:
                skipped = fit_test_points(vae, loss, local_optimizer, dataset.test, test_rows, config.batch_size,
                                          config.kl_scale(state.step, steps_per_epoch))
                if skipped and config.on_nonfinite == "stop":
                    raise nonfinite("the test points' pass")
                state.skipped += skipped
            state.seconds += time.perf_counter() - tic
            if state.images == 0:
                raise TrainingError(f"every step of epoch {state.epoch + 1} was non-finite and skipped; try a smaller --lr")
            vae.eval()
            test_loss = evaluate.negative_elbo(vae, dataset.test, index=test_rows)
            log_px = None
            if config.evaluates_log_likelihood(state.epoch + 1):
                log_px = evaluate.log_likelihood(vae, dataset.test, config.eval_samples, index=test_rows)
            vae.train()
            record = dict(
                epoch=state.epoch + 1,
                step=state.step,
                train_loss=state.loss_sum / state.images,
                test_loss=test_loss,
                seconds=state.seconds,
                images_per_second=n_train / state.seconds,
                kl_scale=config.kl_scale(state.step, steps_per_epoch),
                skipped_steps=state.skipped,
                lr=config.learning_rate(state.epoch),
            )
            if log_px is not None:
                record.update(test_log_likelihood=log_px.value, test_log_likelihood_se=log_px.standard_error,
                              eval_samples=log_px.num_samples)
            state.finish_epoch(record)
            files.append_jsonl(out / "metrics.jsonl", record)
            if state.epoch % config.checkpoint_every == 0 or state.epoch == config.epochs or interrupted[0]:
                save()
            log(
                f"epoch {state.epoch:3d}/{config.epochs}  train {record['train_loss']:8.3f}  test {test_loss:8.3f} "
                f"nats/image  {state.seconds:6.2f} s  {record['images_per_second']:8.0f} images/s"
                + (f"  log p(x) {log_px.value:.3f} ± {log_px.standard_error:.3f} (K={log_px.num_samples})" if log_px else "")
                + (f"  ({state.skipped} non-finite steps skipped)" if state.skipped else "")
            )
            if interrupted[0] and state.epoch < config.epochs:
                raise stop(f"after epoch {state.epoch}")

    metrics = state.metrics
    write_figures(vae, dataset, metrics, out)
    summary = dict(
        final=metrics[-1],
        best_test_loss=min(m["test_loss"] for m in metrics),
        total_seconds=time.perf_counter() - started,
        device=str(device),
        threads=torch.get_num_threads(),
        versions=dict(torch=torch.__version__, pyro=pyro.__version__),
        binarization=config.resolved_binarization,
    )
    files.write_json(out / "summary.json", summary)
    log(f"done: test negative ELBO {metrics[-1]['test_loss']:.3f} nats/image; outputs in {out}")
    return out


def optimizers(vae: VAE, config: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """Adam over the networks' parameters (fused, the fastest form, docs/PERFORMANCE.md) and, for the local
    guide, SparseAdam over its per-point table at `local_lr`: a lazy Adam that moves only the rows in the
    batch, where a dense Adam would go on moving every other row by its stale momentum."""
    table = vae.q.table.weight if vae.is_local else None
    optimizer = torch.optim.Adam([p for p in vae.parameters() if p is not table], lr=config.lr, fused=True)
    return optimizer, (None if table is None else torch.optim.SparseAdam([table], lr=config.local_lr))


def fit_test_points(vae: VAE, loss: Callable[..., torch.Tensor], local_optimizer: torch.optim.Optimizer,
                    x: torch.Tensor, rows: torch.Tensor, batch_size: int, kl_scale: float) -> int:
    """One pass of SVI over the local guide's test points (in a random order, `batch_size` at a time),
    with the decoder fixed: the per-point parameters of the test images get the same steps as those of
    the training images, but the decoder never learns from them. Returns how many steps were skipped
    because the loss or the gradient was not finite."""
    table = vae.q.table.weight
    skipped = 0
    for batch in torch.randperm(x.shape[0], device=x.device).split(batch_size):
        batch_loss = loss(x[batch], kl_scale, rows[batch])
        (table.grad,) = torch.autograd.grad(batch_loss, [table])  # the decoder gets no .grad
        if _finite(batch_loss, [table]):
            local_optimizer.step()
        else:
            skipped += 1
        table.grad = None
    return skipped


def _finite(loss: torch.Tensor, parameters: list[torch.Tensor]) -> bool:
    """True when the loss and every gradient are finite (one norm over all gradients, one sync)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return bool(torch.isfinite(loss) & torch.isfinite(torch.nn.utils.get_total_norm(grads)))


@torch.no_grad()
def write_figures(vae: VAE, dataset: data.Dataset, metrics: list[dict], out: Path, n_images: int = 16) -> None:
    """loss_curve.png, reconstructions.png, samples.png and latent.png in `out`."""
    vae.eval()
    generator = torch.Generator(device=dataset.test.device).manual_seed(0)
    shape = dataset.image_shape
    plots.loss_curve(metrics, out / "loss_curve.png")

    originals = dataset.test[:n_images]
    reconstructions = vae.decode_mean(vae.location(originals, vae.test_rows(n_images)))
    plots.image_grid(
        torch.cat([originals, reconstructions]), out / "reconstructions.png", 2, shape,
        "test images (top) and the decoder's mean at q's location (bottom)",
    )
    z = torch.randn((64, vae.config.z_dim), generator=generator, device=dataset.test.device)
    plots.image_grid(vae.decode_mean(z), out / "samples.png", 8, shape, "decoder means of prior samples z ~ N(0, I)")

    latent = dataset.test[:5000]
    means = vae.location(latent, vae.test_rows(5000))
    labels = None if dataset.test_labels is None else dataset.test_labels[:5000]
    plots.latent(means, labels, out / "latent.png")
    vae.train()
