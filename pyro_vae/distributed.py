"""The processes of one training job: which rank this is, how work is shared, and how results meet.

One process (plain `python scripts/svi_train.py`) is a world of size 1, where every operation here is
the identity and nothing touches `torch.distributed`. Under `torchrun`, the environment names this
process's RANK, LOCAL_RANK and the WORLD_SIZE; `World.from_environment` joins the process group (gloo on
CPUs, NCCL on GPUs) with a timeout, so a rank that never arrives stops the job instead of hanging it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pyro_vae.errors import ConfigError

# How long a collective waits for the other ranks before the job stops with an error.
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """Rank `rank` of `size` processes; `local_rank` numbers the processes on this machine (its GPU)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def described(cls) -> "World":
        """The rank and size torchrun puts in the environment (one process without them); joins nothing."""
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:
            return cls()
        return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))

    @classmethod
    def from_environment(cls, cuda: bool) -> "World":
        """The world torchrun describes in the environment, its process group joined, or one process."""
        world = cls.described()
        if world.size == 1:
            return world
        if cuda:
            if world.local_rank >= torch.cuda.device_count():
                raise ConfigError(
                    f"rank {world.rank} wants GPU {world.local_rank} (LOCAL_RANK), but this machine "
                    f"has {torch.cuda.device_count()}; start at most that many processes per node"
                )
            torch.cuda.set_device(world.local_rank)
        stop_with_parent()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
        return world

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run folder and prints."""
        return self.rank == 0

    def device(self, cuda: bool) -> torch.device:
        """This rank's device: the CPU, or GPU `local_rank`."""
        return torch.device("cuda", self.local_rank) if cuda else torch.device("cpu")

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of `rows` (parts differ in length by at most one)."""
        return rows if self.size == 1 else rows.tensor_split(self.size)[self.rank]

    def owns(self, chunk: int) -> bool:
        """Whether chunk number `chunk` of a round-robin split is this rank's to compute."""
        return chunk % self.size == self.rank

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over ranks, on every rank (in place; the tensor itself with one rank)."""
        if self.size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, flag: torch.Tensor) -> torch.Tensor:
        """Whether `flag` (a bool tensor) is true on any rank, on every rank; no host synchronization."""
        if self.size == 1:
            return flag
        count = flag.to(torch.int32)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        return count.bool()

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's `tensor`, on every rank (in place)."""
        if self.size > 1:
            dist.broadcast(tensor, src=0)
        return tensor

    def share(self, obj: Any) -> Any:
        """Rank 0's `obj` (any picklable value), on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        boxes: list = [None] * self.size
        dist.all_gather_object(boxes, obj)
        return boxes

    def close(self, finished: bool) -> None:
        """Leave the process group: when `finished`, after every rank has finished (so none tears down
        while rank 0 still writes); after an error at once, so that the others' next collective fails
        instead of waiting for this rank."""
        if self.size > 1 and dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()


SINGLE = World()


def stop_with_parent() -> None:
    """On Linux, ask for SIGTERM when this process's parent (torchrun's agent) dies: a rank orphaned by a
    SIGKILL of torchrun then stops as a preempted job does (the ranks agree on a step, rank 0 checkpoints)
    within seconds, instead of idling on the run folder's lock until the collective timeout. A parent that
    died before the request was made (torchrun killed while the ranks were still importing) is caught after
    it: under torchrun (TORCHELASTIC_RUN_ID set) the parent must then be a torchrun process, whatever its
    id (1 in a container where torchrun is the first process); under another launcher, the parent's id must
    not have changed meanwhile."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    orphaned = not is_torchrun(os.getppid()) if "TORCHELASTIC_RUN_ID" in os.environ else os.getppid() != parent
    if orphaned:
        os.kill(os.getpid(), signal.SIGTERM)


def is_torchrun(pid: int) -> bool:
    """Whether process `pid` runs torchrun (`torchrun`, `python -m torch.distributed.run` or `.launch`)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(
        word.endswith(b"torchrun") or word in (b"torch.distributed.run", b"torch.distributed.launch")
        or word.endswith((b"torch/distributed/run.py", b"torch/distributed/launch.py"))
        for word in command
    )  # fmt: skip


def world_prefix(world: World) -> str:
    """ "[rank R] " in a job of several processes (to tell their messages apart), else ""."""
    return f"[rank {world.rank}] " if world.size > 1 else ""
