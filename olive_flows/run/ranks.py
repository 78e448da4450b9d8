"""The part of a data-parallel run every rank but 0 plays: do what rank 0 says (olive_flows/world.py)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from olive_flows.capture import output_to
from olive_flows.world import RUN_DIR_VARIABLE, Ranks


def follow(ranks: Ranks) -> None:
    """Any rank but 0: do what rank 0 says until it says stop. Everything this process prints goes
    to ``rank-<rank>.log`` in the run's log folder (named by the launcher, else by rank 0)."""
    with contextlib.ExitStack() as logs:
        given = os.environ.get(RUN_DIR_VARIABLE)
        if given:
            logs.enter_context(output_to(ranks.log_file(Path(given) / "logs")))
        while True:
            message = ranks.hear()
            if message.get("stop"):
                return
            if "logs" in message and not given:
                logs.enter_context(output_to(ranks.log_file(Path(message["logs"]))))
            if "train" in message:
                train_along(message["train"])


def train_along(task: dict[str, Any]) -> None:
    """Run the Olive pass rank 0 is running (its class, config and input model as JSON), into a
    folder of this rank's own: only rank 0's trained adapter is kept."""
    from olive.model import ModelConfig
    from olive.passes.olive_pass import FullPassConfig

    from olive_flows.plugins import train_pass  # noqa: F401  (registers olive-flows' passes with Olive)
    from olive_flows.run.olive import telemetry_off

    telemetry_off()
    training = FullPassConfig.model_validate(task["pass"]).create_pass()
    model = ModelConfig.model_validate(task["model"]).create_model()
    with tempfile.TemporaryDirectory(prefix="olive-flows-rank-") as output:
        training.run(model, output)
