"""``olive-flows run RECIPE --processes N``: run the same command as N processes on this machine (and,
with ``--machines``, N on each machine), which then train each adapter data-parallel.

PyTorch starts and watches the processes (torch.distributed.elastic's ``start_processes``, the part
of torchrun that does that) and joins them (torch.distributed's rendezvous: through a file on one
machine, so nothing listens on the network; through the main address across machines). This module
adds what torchrun leaves to its users: the terminal goes to rank 0 and the others write
``rank-<rank>.log`` in the run folder, the recipe's lock is held for the whole run, and a process
that dies stops the others and is reported with its rank, how it ended and its last log lines.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from olive_flows.console import Console
from olive_flows.layout import Workspace
from olive_flows.paths import display_path
from olive_flows.problems import Location, Problem, UserError
from olive_flows.recipe.model import Recipe
from olive_flows.world import DEFAULT_PORT, LAUNCHED_BY, RENDEZVOUS_VARIABLE, RUN_DIR_VARIABLE, World, slurm_first_node

LOG_TAIL_LINES = 20
LOOPBACK = {"linux": "lo", "darwin": "lo0"}  # gloo's interface when every process is on this machine


class RankFailed(Exception):
    """A process of a data-parallel run died or failed while rank 0 was still running; the CLI exits with 9."""

    exit_code = 9


@dataclass(frozen=True)
class Machines:
    """Where the processes run: ``count`` machines, this one's place among them, the main one's address."""

    processes: int
    count: int = 1
    rank: int = 0
    main_address: str | None = None  # HOST:PORT of machine 0, needed with more than one machine

    @classmethod
    def from_command_line(
        cls, processes: int, count: int | None, rank: int | None, main_address: str | None
    ) -> Machines:
        """The flags as given; under srun (one task per machine), the machines SLURM allocated."""
        slurm = World.from_environment({k: v for k, v in os.environ.items() if k.startswith("SLURM_")})
        if count is None and slurm.distributed:
            count, rank = slurm.size, slurm.rank
            main_address = main_address or f"{slurm_first_node(os.environ)}:{DEFAULT_PORT}"
        machines = cls(processes, count or 1, rank or 0, main_address)
        problems = machines.problems()
        if problems:
            raise UserError(problems)
        return machines

    def problems(self) -> list[Problem]:
        here = Location("command line")
        found = []
        if not 0 <= self.rank < self.count:
            found.append(
                Problem(
                    here, "--machine-rank", f"is {self.rank}, and --machines {self.count} allows 0 to {self.count - 1}"
                )
            )
        if self.count > 1 and not self.main_address:
            found.append(
                Problem(here, "--main-address", "is needed with more than one machine", "give machine 0's HOST:PORT")
            )
        if self.main_address and not _port(self.main_address):
            found.append(Problem(here, "--main-address", f"'{self.main_address}' is not HOST:PORT"))
        return found

    @property
    def world_size(self) -> int:
        return self.count * self.processes


def _port(address: str) -> int | None:
    host, _, port = address.rpartition(":")
    return int(port) if host and port.isdigit() and 0 < int(port) < 65536 else None


def launch(command: list[str], recipe: Recipe, machines: Machines, console: Console) -> int:
    """Run ``olive-flows <command>`` as this machine's processes; return the exit code of the run."""
    world_env = {
        "WORLD_SIZE": str(machines.world_size),
        "LOCAL_WORLD_SIZE": str(machines.processes),
        LAUNCHED_BY: "olive-flows run --processes",
    }
    if machines.count == 1:
        rendezvous = Path(tempfile.mkdtemp(prefix="olive-flows-rendezvous-"))
        world_env[RENDEZVOUS_VARIABLE] = (rendezvous / "store").as_uri()
        if sys.platform in LOOPBACK:
            world_env.setdefault("GLOO_SOCKET_IFNAME", os.environ.get("GLOO_SOCKET_IFNAME", LOOPBACK[sys.platform]))
    else:
        rendezvous = None
        host, _, port = machines.main_address.rpartition(":")
        world_env |= {"MASTER_ADDR": host, "MASTER_PORT": port}
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // machines.processes))
    workspace = Workspace.of(recipe)
    try:
        if machines.rank == 0:  # the machine rank 0 runs on holds the lock and names the run folder
            with workspace.locked():
                run_dir = workspace.new_run()
                world_env[RUN_DIR_VARIABLE] = str(run_dir)
                return _start(command, machines, world_env | {"OMP_NUM_THREADS": threads}, run_dir, console)
        return _start(command, machines, world_env | {"OMP_NUM_THREADS": threads}, None, console)
    finally:
        if rendezvous:
            shutil.rmtree(rendezvous, ignore_errors=True)


def _start(command: list[str], machines: Machines, env: dict[str, str], run_dir: Path | None, console: Console) -> int:
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, start_processes

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # failures are reported below
    first = machines.rank * machines.processes
    envs = {local: {**env, "RANK": str(first + local), "LOCAL_RANK": str(local)} for local in range(machines.processes)}
    where = f"machine {machines.rank} of {machines.count}, " if machines.count > 1 else ""
    console.say(f"starting {machines.processes} processes ({where}ranks {first} to {first + machines.processes - 1})")
    context = start_processes(
        name="olive-flows",
        entrypoint=sys.executable,
        args={local: ("-m", "olive_flows", *command) for local in envs},
        envs=envs,
        logs_specs=DefaultLogsSpecs(log_dir=os.devnull),  # rank 0 keeps the terminal; the others log themselves
    )
    try:
        result = context.wait(period=0.2)
    finally:
        context.close()
    if not result or not result.is_failed():
        return 0
    local, failure = min(result.failures.items(), key=lambda item: item[1].timestamp)
    rank = first + local
    if rank == 0 and failure.exitcode > 0:  # rank 0 failed on its own and said why
        return failure.exitcode
    how = f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exited with code {failure.exitcode}"
    raise RankFailed(
        f"rank {rank} (pid {failure.pid}) {how}, so the run stopped.\n{_log_tail(run_dir, rank)}\n"
        "Run the same command again: each adapter's training resumes from its last checkpoint."
    )


def _log_tail(run_dir: Path | None, rank: int) -> str:
    if run_dir is None:
        return f"its log is rank-{rank}.log in the run folder on machine 0"
    log = run_dir / "logs" / f"rank-{rank}.log"
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
    except OSError:
        return f"it left no log ({display_path(log)} was not written)"
    return f"--- last {len(lines)} lines of {display_path(log)} ---\n" + "\n".join(lines) + "\n--- end of log ---"
