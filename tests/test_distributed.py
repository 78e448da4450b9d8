"""Training beyond one process: the world from the launcher's environment, training.distributed's line
errors and Trainer arguments, and (slow) ``olive-flows run --processes 2`` on CPU with gloo: disjoint
shards, the loss curve of the doubled batch, one verified package, a killed rank, and the resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_recipe, write_recipe

from olive_flows.compile.workflow import TRAIN, compile_recipe, total_steps
from olive_flows.data.prepare import prepare_dataset
from olive_flows.layout import MANIFEST, Workspace
from olive_flows.models.resolve import model_facts, model_ref
from olive_flows.problems import UserError
from olive_flows.recipe.distributed import deepspeed_config, trainer_arguments
from olive_flows.run.launch import Machines
from olive_flows.validate.environment import environment_problems
from olive_flows.validate.load import load_recipe
from olive_flows.world import World

REPO = Path(__file__).resolve().parent.parent

# --- the world ---------------------------------------------------------------------------------------


def test_the_world_comes_from_torchrun_srun_or_nothing():
    torchrun = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "x"}
    assert World.from_environment(torchrun) == World(3, 8, 1, "torchrun")
    assert World.from_environment({**torchrun, "ACCELERATE_MIXED_PRECISION": "no"}).launcher == "accelerate launch"
    srun = {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "16", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "1234"}
    world = World.from_environment(srun)
    assert world == World(5, 16, 1, "srun") and world.distributed and not world.main
    rendezvous = world.rendezvous({**srun, "MASTER_ADDR": "node01"})
    assert rendezvous == {
        "RANK": "5",
        "WORLD_SIZE": "16",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "node01",
        "MASTER_PORT": str(15000 + 1234),
    }, "the port comes from the job id, so two jobs on one node do not collide"
    batch_script = {"SLURM_PROCID": "0", "SLURM_NTASKS": "16", "SLURM_JOB_ID": "1234"}
    assert not World.from_environment(batch_script).distributed, "a batch script alone is one process"
    assert World.from_environment({}) == World() and World().main


def test_machine_flags_are_checked_before_anything_starts():
    assert Machines(2).world_size == 2 and not Machines(2).problems()
    assert Machines(4, 2, 1, "node0:29500").world_size == 8
    found = [p.format() for p in Machines(2, 2, 2, "node0:29500").problems()]
    assert found == ["command line: --machine-rank: is 2, and --machines 2 allows 0 to 1"]
    found = [p.format() for p in Machines(2, 2, 0, None).problems()]
    assert found == ["command line: --main-address: is needed with more than one machine; give machine 0's HOST:PORT"]
    assert "is not HOST:PORT" in Machines(2, 2, 0, "node0").problems()[0].format()


def olive_flows(*args: str, cwd: Path = REPO, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "olive_flows", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def test_machine_flags_without_processes_and_a_launched_process_are_refused(tmp_path):
    result = olive_flows("run", "quickstart", "--machines", "2")
    assert result.returncode == 2 and "command line: --machines: goes with --processes N" in result.stderr
    result = olive_flows("run", "quickstart", "--processes", "2", "--machines", "2", "--machine-rank", "0")
    assert result.returncode == 2 and "--main-address: is needed with more than one machine" in result.stderr
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"}
    result = subprocess.run(
        [sys.executable, "-m", "olive_flows", "run", "quickstart", "--processes", "2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 2 and "already rank 0 of 2, started by torchrun" in result.stderr


# --- training.distributed -----------------------------------------------------------------------------


def demo_recipe(tmp_path: Path, distributed: dict, method: str = "lora") -> Path:
    (tmp_path / "people.jsonl").write_text('{"prompt": "a", "completion": "b"}\n' * 20, encoding="utf-8")
    recipe = {
        "schema_version": 1,
        "name": "demo",
        "model": {"id": "builtin:smollm2-135m-instruct"},
        "datasets": {"people": {"path": "people.jsonl"}},
        "adapters": {"first": {"dataset": "people", "method": method, "training": {"distributed": distributed}}},
        "targets": {"cpu": {"device": "cpu", "precision": "int4"}},
    }
    path = tmp_path / "recipe.yaml"
    import yaml

    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(UserError) as info:
        load_recipe(str(path))
    return [p.format() for p in info.value.problems]


@pytest.mark.parametrize(
    ("distributed", "field", "message"),
    [
        ({"strategy": "fsdp"}, "strategy", "fsdp cannot train lora: Olive's LoRA pass saves the trained adapter"),
        ({"strategy": "deepspeed", "zero_stage": 3}, "strategy", "deepspeed cannot train lora: ZeRO stage 3 shards"),
        ({"strategy": "ddp", "zero_stage": 2}, "zero_stage", "zero_stage is a DeepSpeed setting, and strategy is ddp"),
        ({"offload": "cpu"}, "offload", "ddp keeps a whole model on every device: there is nothing to offload"),
        ({"config": "ds.json", "offload": "cpu"}, "offload", "offload has no effect beside config"),
        ({"config": "missing.json"}, "config", "cannot read"),
        ({"config": "notds.json"}, "config", "has no zero_optimization section: it is not a DeepSpeed config"),
        ({"config": "fsdp.yaml"}, "config", "fsdp cannot train lora"),
        ({"config": "tpu.yaml"}, "config", "distributed_type is 'XLA'; olive-flows reads accelerate configs of type"),
        ({"config": "ds.toml"}, "config", "a distributed config is a DeepSpeed config (.json) or an accelerate config"),
    ],
)
def test_distributed_settings_that_cannot_work_are_errors_on_their_line(tmp_path, distributed, field, message):
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}), encoding="utf-8")
    (tmp_path / "notds.json").write_text(json.dumps({"train_batch_size": 8}), encoding="utf-8")
    (tmp_path / "fsdp.yaml").write_text(
        "distributed_type: FSDP\nfsdp_config:\n  fsdp_offload_params: true\n", encoding="utf-8"
    )
    (tmp_path / "tpu.yaml").write_text("distributed_type: XLA\n", encoding="utf-8")
    (tmp_path / "ds.toml").write_text("", encoding="utf-8")
    path = demo_recipe(tmp_path, distributed)
    found = errors(path)
    assert len(found) == 1, found
    line = next(
        i
        for i, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if text.strip().startswith(f"{field}:")
    )
    assert found[0].startswith(f"{path}:{line}:") and f"distributed.{field}: " in found[0] and message in found[0]


def test_strategies_and_config_files_become_trainer_arguments(tmp_path):
    (tmp_path / "ds.json").write_text(
        json.dumps({"zero_optimization": {"stage": 2, "overlap_comm": False}}), encoding="utf-8"
    )
    (tmp_path / "ddp.yaml").write_text("distributed_type: MULTI_GPU\nnum_processes: 8\n", encoding="utf-8")
    (tmp_path / "zero.yaml").write_text(
        "distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 2\n  offload_optimizer_device: cpu\n"
    )
    for distributed, expected in [
        ({}, {"ddp_find_unused_parameters": False}),
        ({"config": "ddp.yaml"}, {"ddp_find_unused_parameters": False}),
        ({"config": "ds.json"}, {"deepspeed": {"zero_optimization": {"stage": 2, "overlap_comm": False}}}),
        ({"config": "zero.yaml"}, {"deepspeed": deepspeed_config(2, "cpu")}),
        ({"strategy": "deepspeed", "offload": "cpu"}, {"deepspeed": deepspeed_config(2, "cpu")}),
    ]:
        recipe = load_recipe(str(demo_recipe(tmp_path, distributed)))
        assert trainer_arguments(recipe, "first", 2) == expected, distributed
        assert trainer_arguments(recipe, "first", 1) == {}, "one process: nothing to spread"
    zero = deepspeed_config(2, "cpu")["zero_optimization"]
    assert zero["stage"] == 2 and zero["offload_optimizer"]["device"] == "cpu" and "offload_param" not in zero


def test_sharding_needs_company_and_deepspeed_installed(tmp_path):
    recipe = load_recipe(str(demo_recipe(tmp_path, {"strategy": "deepspeed"})))
    alone = [p.format() for p in environment_problems(recipe, 1)]
    assert len(alone) == 1 and "distributed.strategy: deepspeed shards the model across processes" in alone[0]
    assert "--processes N" in alone[0]
    together = [p.format() for p in environment_problems(recipe, 2)]
    assert together == [] or "deepspeed needs deepspeed; pip install 'olive-flows[deepspeed]'" in together[0]
    ddp = load_recipe(str(demo_recipe(tmp_path, {})))
    assert not list(environment_problems(ddp, 1)) and not list(environment_problems(ddp, 4))


def test_processes_change_the_steps_the_arguments_and_the_checkpoint_folder(tiny_model, tmp_path):
    recipe = tiny_recipe(tiny_model("llama"), tmp_path / "out")
    for adapter in recipe["adapters"].values():
        adapter["training"] = {"epochs": 2, "batch_size": 2, "max_seq_len": 96}
    recipe = load_recipe(write_recipe(tmp_path, recipe))
    workspace = Workspace.of(recipe)
    ref = model_ref(recipe)
    datasets = {d: prepare_dataset(recipe, d, workspace.data) for d in recipe.datasets}
    one, two = (
        compile_recipe(recipe, ref, model_facts(ref), datasets, workspace, processes=n)[0].config["passes"][TRAIN]
        for n in (1, 2)
    )
    assert "world_size" not in one and two["world_size"] == 2
    assert two["training_args"]["ddp_find_unused_parameters"] is False
    assert "ddp_find_unused_parameters" not in one["training_args"]
    assert one["training_args"]["output_dir"] != two["training_args"]["output_dir"], "a different training"
    training = recipe.spec.adapters["contacts"].training
    assert total_steps(training, 36, 2) == 18 and total_steps(training, 36, 1) == 36, "each step takes 2 x 2 rows"


def test_compile_shows_what_several_processes_would_run(tiny_model, tmp_path):
    path = recipe_for(tiny_model, tmp_path)
    result = olive_flows("compile", str(path), "--processes", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads(
        (tmp_path / "out" / "tiny" / "_work" / "compiled" / "cpu" / "contacts.json").read_text(encoding="utf-8")
    )
    assert config["passes"]["train"]["world_size"] == 2
    assert olive_flows("compile", str(path), "--processes", "0", cwd=tmp_path).returncode == 2


# --- several processes, for real ------------------------------------------------------------------------


def recipe_for(tiny_model, folder: Path, **training) -> Path:
    """One adapter (contacts, 36 training rows) on the tiny Llama."""
    recipe = tiny_recipe(tiny_model("llama"), folder / "out")
    del recipe["adapters"]["dates"], recipe["datasets"]["dates"], recipe["evaluation"]["metrics"]["dates"]
    recipe["adapters"]["contacts"]["training"] = {"max_steps": 6, "batch_size": 2, "learning_rate": 0.01} | training
    return write_recipe(folder, recipe)


def losses(out: Path) -> list[tuple[float, float]]:
    log = json.loads((out / "tiny" / "_peft" / "contacts" / "training_log.json").read_text(encoding="utf-8"))
    return [(entry["epoch"], entry["loss"]) for entry in log if "loss" in entry]


LOSS_TOLERANCE = 0.03  # relative, per step: ranks average their own batch means, one process the pooled mean
FIRST_LOSS_TOLERANCE = 1e-3  # before any update only that averaging differs (measured 2e-5)


@pytest.mark.slow
def test_two_processes_train_disjoint_shards_into_one_verified_package(tiny_model, tmp_path):
    path = recipe_for(tiny_model, tmp_path)
    result = olive_flows("run", str(path), "--processes", "2", "--offline", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 processes train each adapter together (olive-flows run --processes)" in result.stdout
    package = tmp_path / "out" / "tiny" / "cpu"
    assert json.loads((package / MANIFEST).read_text(encoding="utf-8"))["adapters"]["contacts"]["world_size"] == 2
    verified = olive_flows("verify", str(package))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    (run_dir,) = (tmp_path / "out" / "tiny" / "_work" / "runs").iterdir()
    assert "Running fine-tuning" in (run_dir / "logs" / "rank-1.log").read_text(encoding="utf-8"), (
        "rank 1 trained, and logged it"
    )

    (checkpoints,) = (tmp_path / "out" / "tiny" / "_work" / "checkpoints").iterdir()
    records = [json.loads((checkpoints / "ranks" / f"rank-{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]
    assert all(record["world_size"] == 2 and record["rows"] >= 12 for record in records), "6 steps x 2 rows each"
    first, second = (set(record["digests"]) for record in records)
    assert first and second and not first & second, "the ranks trained on disjoint rows"

    # One process with the batch doubled takes the same rows per step: the same first loss (before any
    # update: the mean over the same 4 rows) and the same curve within LOSS_TOLERANCE. One process with
    # the same batch takes 2 of those rows, so its first loss is another one.
    curves = {"ddp": losses(tmp_path / "out")}
    for name, batch in (("doubled", 4), ("same", 2)):
        single = olive_flows(
            "run", str(path), f"adapters.contacts.training.batch_size={batch}", f"output.dir={tmp_path / name}",
            "--offline", cwd=tmp_path,
        )  # fmt: skip
        assert single.returncode == 0, single.stderr
        curves[name] = losses(tmp_path / name)
    assert [e for e, _ in curves["ddp"]] == [e for e, _ in curves["doubled"]], "each step is the same share of an epoch"

    def gap(a: str, b: str, steps: int | None = None) -> float:
        pairs = list(zip(curves[a], curves[b], strict=True))[:steps]
        return max(abs(x - y) / y for (_, x), (_, y) in pairs)

    assert gap("ddp", "doubled", 1) < FIRST_LOSS_TOLERANCE < gap("ddp", "same", 1), curves
    assert gap("ddp", "doubled") < LOSS_TOLERANCE, curves


def rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """The pid of the process the launcher started as ``rank`` (from its environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text(encoding="utf-8")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if parent == launcher.pid and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_killed_rank_stops_the_run_by_name_and_the_next_run_resumes(tiny_model, tmp_path):
    path = recipe_for(tiny_model, tmp_path, max_steps=400, checkpoint_every=20)
    command = [sys.executable, "-m", "olive_flows", "run", str(path), "--processes", "2", "--offline"]
    launcher = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / "out" / "tiny" / "_work" / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("*/checkpoint-*/trainer_state.json")) and time.monotonic() < deadline:
        assert launcher.poll() is None, launcher.communicate()
        time.sleep(0.2)
    pid = rank_pid(launcher, 1)
    assert pid, "rank 1 is running"
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    out, err = launcher.communicate(timeout=120)
    assert time.monotonic() - killed < 10, "the whole run stops within seconds"
    assert launcher.returncode == 9, out + err
    assert f"error: rank 1 (pid {pid}) was killed by SIGKILL, so the run stopped." in err
    assert "lines of" in err and "rank-1.log" in err and "Running fine-tuning" in err, "its last log lines"
    assert "resumes from its last checkpoint" in err

    again = olive_flows("run", str(path), "--processes", "2", "--offline", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming training at step" in again.stdout
    manifest = json.loads((tmp_path / "out" / "tiny" / "cpu" / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["adapters"]["contacts"]["world_size"] == 2
