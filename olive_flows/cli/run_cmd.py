"""``olive-flows run RECIPE [FIELD=VALUE ...] [--processes N ...]``: train, export, package and check a recipe."""

from __future__ import annotations

import argparse
import time

from olive_flows.cli import positive
from olive_flows.problems import Location, Problem, UserError
from olive_flows.validate.load import load_recipe
from olive_flows.world import World

PEER_FAILURE_GRACE_S = 3.0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("run", help="train every adapter and write one package per target")
    parser.add_argument("recipe", help="recipe file or built-in recipe name")
    parser.add_argument(
        "overrides", nargs="*", metavar="FIELD=VALUE", help="override a recipe field, e.g. adapters.chat.r=32"
    )
    parser.add_argument("--offline", action="store_true", help="never contact the Hugging Face hubs")
    several = parser.add_argument_group(
        "several processes", "train each adapter data-parallel (torchrun, accelerate launch and srun work too)"
    )
    several.add_argument("--processes", type=positive, metavar="N", help="processes on this machine (one per GPU)")
    several.add_argument("--machines", type=positive, metavar="M", help="machines taking part (default 1)")
    several.add_argument("--machine-rank", type=int, metavar="R", help="this machine's place, 0 to M-1 (default 0)")
    several.add_argument("--main-address", metavar="HOST:PORT", help="machine 0's address, with --machines")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    world = World.from_environment()
    if args.processes:
        return _launch(args, world)
    if args.machines or args.machine_rank is not None or args.main_address:
        flag = (
            "--machines" if args.machines else "--machine-rank" if args.machine_rank is not None else "--main-address"
        )
        raise UserError([Problem(Location("command line"), flag, "goes with --processes N")])
    if not world.distributed:
        return _run(args)
    from olive_flows.run.ranks import follow
    from olive_flows.world import join

    with join(world) as ranks:
        if not world.main:
            follow(ranks)
            return 0
        try:
            return _run(args)
        except Exception:
            # Another rank's death fails rank 0's next collective at once; its launcher stops this
            # process within this grace and reports the rank that died, which is the news.
            time.sleep(PEER_FAILURE_GRACE_S)
            raise


def _run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides)
    from olive_flows.console import Console
    from olive_flows.pipeline import run_recipe  # heavy imports only once the recipe is valid

    console = Console()
    return run_recipe(recipe, offline=args.offline, console=console).exit_code(console)


def _launch(args: argparse.Namespace, world: World) -> int:
    from olive_flows.console import Console
    from olive_flows.run.launch import Machines, launch

    if world.distributed:
        raise UserError(
            [
                Problem(
                    Location("command line"),
                    "--processes",
                    f"this process is already rank {world.rank} of {world.size}, started by {world.launcher}",
                    "leave --processes out: the launcher already started the processes",
                )
            ]
        )
    machines = Machines.from_command_line(args.processes, args.machines, args.machine_rank, args.main_address)
    recipe = load_recipe(args.recipe, args.overrides)  # mistakes are reported once, before anything starts
    command = ["run", args.recipe, *args.overrides, *(["--offline"] if args.offline else [])]
    return launch(command, recipe, machines, Console())
