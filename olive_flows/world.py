"""Which process of a data-parallel run this is, and the channel its rank 0 speaks over.

``torchrun``, ``accelerate launch`` and olive-flows' own ``--processes`` (run/launch.py) set RANK,
WORLD_SIZE and LOCAL_RANK; SLURM's ``srun`` sets SLURM_PROCID, SLURM_STEP_NUM_TASKS and
SLURM_LOCALID, which are read the same way. Only a job step (``srun``) counts: a batch script alone
is one process even in an allocation of many tasks.

In a data-parallel run, rank 0 is an ordinary run: it prepares the data, runs each job's Olive
workflow, packages and evaluates. When its training pass starts (a cached training never starts), it
tells the other ranks to run the same Olive pass on the same input model (plugins/train_pass.py);
together they are one transformers Trainer under torch.distributed, each rank on its own shard of
every batch. The other ranks do nothing else (run/ranks.py): they wait for rank 0's next word (where
to log, a training to join, stop), so data preparation, export, packaging and evaluation happen once.
Rank 0's words travel over a gloo process group of their own, beside the one the Trainer trains over
(NCCL on GPUs, gloo on CPUs), with a long timeout: between two trainings rank 0 may export and
evaluate for hours.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

DEFAULT_PORT = 29500  # torchrun's
LAUNCHED_BY = "OLIVE_FLOWS_LAUNCHER"  # set by run/launch.py


@dataclass(frozen=True)
class World:
    """This process's place among the processes training together."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launcher: str = ""  # what started the processes, for messages

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """The process that prepares data, exports, packages and evaluates: rank 0."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> World:
        env = os.environ if env is None else env
        if "RANK" in env and "WORLD_SIZE" in env:
            rank = int(env["RANK"])
            return cls(rank, int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", rank)), launcher_name(env))
        if int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1 and "SLURM_PROCID" in env:
            return cls(
                int(env["SLURM_PROCID"]), int(env["SLURM_STEP_NUM_TASKS"]), int(env.get("SLURM_LOCALID", 0)), "srun"
            )
        return cls()

    def rendezvous(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The variables torch.distributed's ``env://`` rendezvous reads, for processes started by srun
        (torchrun sets them itself): the first node of the step is the main address."""
        env = os.environ if env is None else env
        if self.launcher != "srun":
            return {}
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.size),
            "LOCAL_RANK": str(self.local_rank),
            "MASTER_ADDR": env.get("MASTER_ADDR") or slurm_first_node(env),
            "MASTER_PORT": env.get("MASTER_PORT") or str(slurm_port(env)),
        }


def launcher_name(env: Mapping[str, str]) -> str:
    """What set RANK and WORLD_SIZE: olive-flows' --processes, accelerate launch, torchrun, or another."""
    if LAUNCHED_BY in env:
        return env[LAUNCHED_BY]
    if any(name.startswith("ACCELERATE_") for name in env):
        return "accelerate launch"
    return "torchrun" if "TORCHELASTIC_RUN_ID" in env else "a launcher"


def slurm_first_node(env: Mapping[str, str]) -> str:
    """The first host of the SLURM step's node list (``scontrol`` expands ranges such as
    node[01-04]); without scontrol, the address srun was started from."""
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
    if nodes and shutil.which("scontrol"):
        listed = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=False)
        if listed.returncode == 0 and listed.stdout.split():
            return listed.stdout.split()[0]
    return env.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1")


def slurm_port(env: Mapping[str, str]) -> int:
    """A port derived from the job id, so two jobs sharing a node do not collide."""
    job = env.get("SLURM_JOB_ID", "")
    return 15000 + int(job) % 20000 if job.isdigit() else DEFAULT_PORT


BETWEEN_TRAININGS = timedelta(hours=24)  # how long the other ranks wait for rank 0's next word
RUN_DIR_VARIABLE = "OLIVE_FLOWS_RUN_DIR"  # set by ``run --processes`` (run/launch.py), which holds the lock
RENDEZVOUS_VARIABLE = "OLIVE_FLOWS_RENDEZVOUS"  # its init_method on one machine (a file); else env://


class Ranks:
    """This process's part in a data-parallel run, and the channel rank 0 speaks over."""

    def __init__(self, world: World, channel: Any):
        self.world, self.channel = world, channel

    def tell(self, message: dict[str, Any]) -> None:
        """Rank 0: send ``message`` to every other rank."""
        import torch.distributed as dist

        dist.broadcast_object_list([message], src=0, group=self.channel)

    def hear(self) -> dict[str, Any]:
        """Any other rank: wait for rank 0's next message."""
        import torch.distributed as dist

        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0, group=self.channel)
        return box[0]

    def log_file(self, logs: Path) -> Path:
        return logs / f"rank-{self.world.rank}.log"


_joined: Ranks | None = None


def joined() -> Ranks | None:
    """The data-parallel run this process is part of, or None when it trains alone."""
    return _joined


@contextlib.contextmanager
def join(world: World) -> Iterator[Ranks | None]:
    """Join the other processes of ``world`` for the block (nothing to join for a single process).
    Rank 0 tells the others to stop when the block ends, however it ends."""
    global _joined
    if not world.distributed:
        yield None
        return
    import torch
    import torch.distributed as dist

    os.environ.update(world.rendezvous())
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(
        "nccl" if torch.cuda.is_available() else "gloo",
        init_method=os.environ.get(RENDEZVOUS_VARIABLE, "env://"),
        rank=world.rank,
        world_size=world.size,
    )
    _joined = Ranks(world, dist.new_group(backend="gloo", timeout=BETWEEN_TRAININGS))
    try:
        yield _joined
    finally:
        if world.main:
            with contextlib.suppress(Exception):  # a rank already gone is its launcher's to report
                _joined.tell({"stop": True})
        _joined = None
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
