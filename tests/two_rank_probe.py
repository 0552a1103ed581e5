"""Started by tests/test_distributed.py as `torchrun --nproc-per-node 2 tests/two_rank_probe.py OUT`: takes
measurements on the real engine with two ranks (gloo) and writes them, from rank 0, to OUT/probe.json.

1. One step of a global batch of 7 images, shared 4 + 3, each rank's noise from seed 100 + rank, with
   learning rate 0: the gradient DDP leaves in every rank's .grad.
2. The test negative ELBO and log p(x) of 50 test images, sharded over the ranks in several chunks.
3. Rank 1's weights nudged: what checkpointing then says.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from pyro_vae.core.model_config import ModelConfig
from pyro_vae.distributed import World
from pyro_vae.evaluation import likelihood as evaluate
from pyro_vae.training.build import build_run
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.run import TrainingError
from pyro_vae.training.step import Batch, svi_step

CONFIG = TrainConfig(model=ModelConfig(hidden=(32,), z_dim=2), threads=1)
BATCH, SEED = 7, 100
EVAL = dict(images=50, samples=30, max_rows=64, elbo_samples=2, chunk_size=8)


def binary_batch(dataset, rows: torch.Tensor) -> torch.Tensor:
    """Training images `rows`, binarized by a threshold (no random draw)."""
    return (dataset.train[rows] > 0.5).float()


def main(out: Path) -> None:
    world = World.from_environment(cuda=False)
    run = build_run(replace(CONFIG, out=str(out / "run")), world)
    for group in run.objective.optimizer.param_groups:
        group["lr"] = 0.0
    batch = torch.arange(BATCH)
    own = world.shard(batch)
    torch.manual_seed(SEED + world.rank)
    svi_step(
        run.objective.loss,
        run.objective.optimizer,
        Batch(binary_batch(run.dataset, own)),
        weight=len(own) * world.size / BATCH,
        world=world,
    )
    parameters = [p for p in run.vae.parameters() if p.requires_grad]
    x = run.dataset.test[: EVAL["images"]]
    log_px = evaluate.log_likelihood(run.vae, x, EVAL["samples"], max_rows=EVAL["max_rows"], world=world)
    elbo = evaluate.negative_elbo(run.vae, x, EVAL["elbo_samples"], chunk_size=EVAL["chunk_size"], world=world)
    result = dict(
        shard=len(own),
        grads=[p.grad.tolist() for p in parameters],
        per_image=log_px.per_image.tolist(),
        log_px=log_px.value,
        standard_error=log_px.standard_error,
        negative_elbo=elbo,
    )
    result["digest_check_passes"] = run.checkpoint().progress.step == 0
    if world.rank == 1:
        with torch.no_grad():
            parameters[0][0, 0] += 1e-3
    try:
        run.checkpoint()
        result["desync_error"] = None
    except TrainingError as error:
        result["desync_error"] = str(error)
    if world.is_main:
        (out / "probe.json").write_text(json.dumps(result))
    world.close(finished=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
