"""Compiling recipes into Olive workflow configs: pass chain, parameters, and byte stability."""

from __future__ import annotations

import json
import re
from dataclasses import replace

from olive_flows.compile.workflow import compile_recipe, lora_node_names, total_steps
from olive_flows.data.prepare import prepare_dataset
from olive_flows.layout import Workspace
from olive_flows.models.resolve import model_facts, model_ref
from olive_flows.validate.load import load_recipe


def compile_builtin(name: str, tmp_path, *overrides: str):
    recipe = load_recipe(name, [f"output.dir={tmp_path}", *overrides])
    workspace = Workspace.of(recipe)
    ref = model_ref(recipe)
    datasets = {d: prepare_dataset(recipe, d, workspace.data) for d in recipe.datasets}
    return compile_recipe(recipe, ref, model_facts(ref), datasets, workspace)


def test_quickstart_compiles_to_one_workflow_per_adapter(tmp_path):
    jobs = compile_builtin("quickstart", tmp_path)
    assert [(j.target, j.adapter) for j in jobs] == [("cpu", "contacts"), ("cpu", "dates")]
    config = jobs[0].config
    assert list(config["passes"]) == ["train", "build", "quantize", "extract"], "int4 q4_1: fp32 build + Q4_1 pass"
    train, build = config["passes"]["train"], config["passes"]["build"]
    assert build["precision"] == "fp32" and config["passes"]["quantize"]["type"] == "OnnxQ41Quantization"
    assert (
        train["type"] == "OliveFlowsLoRA"
        and train["r"] == 16
        and train["alpha"] == 32
        and train["lora_dropout"] == 0.05
    )
    assert train["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"], "llama default from metadata"
    args = train["training_args"]
    assert args["max_steps"] == 100 and "num_train_epochs" not in args
    assert args["per_device_train_batch_size"] == 4 and args["learning_rate"] == 0.001
    assert args["gradient_checkpointing"] is False and args["lr_scheduler_type"] == "cosine"
    assert build == {"type": "OliveFlowsModelBuilder", "precision": "fp32"}
    quantize = config["passes"]["quantize"]
    assert quantize == {
        "type": "OnnxQ41Quantization",
        "int8_nodes": ["/lm_head/MatMul"],
        "nodes_to_exclude": quantize["nodes_to_exclude"],
        "block_size": 32,
        "accuracy_level": 4,
    }
    assert len(quantize["nodes_to_exclude"]) == 30 * 4 * 2
    assert all(
        re.fullmatch(r"/model/layers\.\d+/attn/[qkvo]_proj/lora_[AB]/MatMul", n) for n in quantize["nodes_to_exclude"]
    )
    build = compile_builtin("quickstart", tmp_path, "targets.cpu.int4.algorithm=k_quant_mixed")[0].config["passes"]
    assert list(build) == ["train", "build", "extract"], "ModelBuilder quantizes k_quant_mixed itself"
    assert build["build"] == {
        "type": "OliveFlowsModelBuilder",
        "precision": "int4",
        "int4_block_size": 32,
        "int4_accuracy_level": 4,
        "int4_is_symmetric": False,
        "int4_algo_config": "k_quant_mixed",
        "int4_nodes_to_exclude": quantize["nodes_to_exclude"],
    }
    data = {d["name"]: d for d in config["data_configs"]}
    pre = data["train_rows"]["pre_process_data_config"]
    assert pre["type"] == "olive_flows_tokenize", "olive-flows' own tokenization, registered with Olive"
    assert data["train_rows"]["user_script"].endswith("olive_flows/plugins/tokenize_component.py")
    params = pre["params"]
    assert {k: params[k] for k in ("max_seq_len", "loss_on", "min_tokens", "max_tokens")} == {
        "max_seq_len": 128,
        "loss_on": "assistant",
        "min_tokens": None,
        "max_tokens": None,
    }
    assert params["stats_path"].endswith(".json") and "/stats-contacts-" in params["stats_path"]
    assert data["eval_rows"]["pre_process_data_config"]["params"]["stats_path"] != params["stats_path"]
    assert data["train_rows"]["load_dataset_config"]["split"] == "train"
    assert args["train_sampling_strategy"] == "random", "group_by_length is off unless a recipe asks for it"
    assert config["systems"]["target"]["accelerators"] == [
        {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}
    ]
    assert config["workflow_id"] == "quickstart", "one workflow id per recipe lets targets share cached training"


def test_compile_is_byte_stable(tmp_path):
    first = compile_builtin("quickstart", tmp_path)
    second = compile_builtin("quickstart", tmp_path)
    assert [j.to_json() for j in first] == [j.to_json() for j in second]
    assert json.loads(first[0].to_json()) == first[0].config


def test_phi_lora_compiles_for_cpu_and_cuda(tmp_path):
    jobs = compile_builtin("phi-lora", tmp_path)
    assert [(j.target, j.adapter) for j in jobs] == [
        ("cpu", "contacts"),
        ("cpu", "dates"),
        ("cuda", "contacts"),
        ("cuda", "dates"),
    ]
    cuda = jobs[2].config
    assert cuda["systems"]["target"]["accelerators"] == [
        {"device": "gpu", "execution_providers": ["CUDAExecutionProvider"]}
    ]
    assert cuda["passes"]["train"]["target_modules"] == ["qkv_proj", "o_proj"]
    assert cuda["passes"]["train"]["torch_dtype"] == "bfloat16"
    assert cuda["passes"]["train"]["training_args"]["num_train_epochs"] == 2
    assert cuda["input_model"]["model_path"] == "microsoft/Phi-3-mini-4k-instruct"
    names = set(cuda["passes"]["build"]["int4_nodes_to_exclude"])
    assert (
        "/model/layers.31/attn/qkv_proj/lora_B/MatMul" in names and "/model/layers.0/attn/q_proj/lora_A/MatMul" in names
    )
    assert jobs[0].config["passes"]["train"] == cuda["passes"]["train"], "training is the same pass for both targets"


def test_int8_is_the_builders_own_from_genai_0_16_and_rtn_before(tmp_path, monkeypatch):
    """int8 with onnxruntime-genai 0.16 or later: one ModelBuilder pass at int8 (asymmetric, block 32,
    accuracy level 4: the builder's symmetric default loses quality), LoRA MatMuls excluded. With an
    older builder (0.14 had no int8): fp32 build, then Olive's 8-bit RTN with the LM head kept float."""
    from olive_flows.compile import workflow

    int8 = ("targets.cpu.precision=int8", "targets.cpu.int4=null")  # int4 options are refused at int8
    monkeypatch.setattr(workflow, "builder_version", lambda: "0.18.0")
    jobs = compile_builtin("quickstart", tmp_path, *int8)
    passes = jobs[0].config["passes"]
    assert list(passes) == ["train", "build", "extract"], "the builder quantizes int8 itself"
    lora = lora_node_names(passes["train"]["target_modules"], 30)
    assert passes["build"] == {
        "type": "OliveFlowsModelBuilder",
        "precision": "int8",
        "int4_block_size": 32,
        "int4_accuracy_level": 4,
        "int4_is_symmetric": False,
        "int4_nodes_to_exclude": lora,
    }
    assert len(lora) == 30 * 4 * 2 and "/model/layers.29/attn/o_proj/lora_B/MatMul" in lora
    monkeypatch.setattr(workflow, "builder_version", lambda: "0.16.0")
    assert compile_builtin("quickstart", tmp_path, *int8)[0].config["passes"] == passes

    for older in ("0.15.2", "0.14.1", None):
        monkeypatch.setattr(workflow, "builder_version", lambda older=older: older)
        passes = compile_builtin("quickstart", tmp_path, *int8)[0].config["passes"]
        assert list(passes) == ["train", "build", "quantize", "extract"], older
        assert passes["build"] == {"type": "OliveFlowsModelBuilder", "precision": "fp32"}
        assert passes["quantize"] == {
            "type": "OnnxBlockWiseRtnQuantization",
            "bits": 8,
            "block_size": 32,
            "is_symmetric": False,
            "accuracy_level": 4,
            "nodes_to_exclude": ["/lm_head/MatMul", *lora],
        }


def test_builder_version_is_the_installed_distributions():
    import importlib.metadata

    from olive_flows.compile.workflow import builder_version

    assert builder_version() == importlib.metadata.version("onnxruntime-genai")


def test_lora_node_names_cover_unpacked_projections():
    names = lora_node_names(["gate_up_proj"], 1)
    assert names == [
        f"/model/layers.0/mlp/{p}/{h}/MatMul"
        for p in ("gate_proj", "gate_up_proj", "up_proj")
        for h in ("lora_A", "lora_B")
    ]


def test_total_steps_from_epochs():
    default = load_recipe("quickstart").spec.adapters["dates"].training
    training = replace(default, max_steps=None, epochs=2, batch_size=4, grad_accum=2)
    assert total_steps(training, 17) == 5  # ceil(17/4)=5 batches, /2 accumulation, x2 epochs
    assert total_steps(replace(training, max_steps=7), 17) == 7


def test_qlora_keeps_every_linear_layers_lora_out_of_int4(tmp_path):
    """Olive's QLoRA pass trains every linear layer whatever target_modules says; the compiled
    config says so, and int4 leaves all of those LoRA MatMuls float (quantizing an r=8 LoRA B
    matrix is what crashed ModelBuilder on the GPU machine)."""
    jobs = compile_builtin(
        "quickstart",
        tmp_path,
        "adapters.contacts.method=qlora",
        "adapters.dates.method=qlora",
        "targets.cpu.int4.algorithm=k_quant_mixed",
    )
    train, build = jobs[0].config["passes"]["train"], jobs[0].config["passes"]["build"]
    assert train["type"] == "OliveFlowsQLoRA"
    assert train["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert "/model/layers.29/mlp/down_proj/lora_B/MatMul" in build["int4_nodes_to_exclude"]
    assert len(build["int4_nodes_to_exclude"]) == 30 * 7 * 2


def test_every_training_argument_is_one_transformers_knows(tmp_path):
    """Olive drops a training argument transformers' TrainingArguments lacks with only a log warning,
    which is how group_by_length (gone in transformers 5) was silently ignored."""
    import dataclasses

    from transformers import TrainingArguments

    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    jobs = compile_builtin("quickstart", tmp_path, "adapters.contacts.training.group_by_length=true")
    for job in jobs:
        args = job.config["passes"]["train"]["training_args"]
        assert set(args) <= known, set(args) - known
    strategies = [j.config["passes"]["train"]["training_args"]["train_sampling_strategy"] for j in jobs]
    assert strategies == ["group_by_length", "random"]


def test_packing_reaches_the_training_pass_when_a_recipe_asks_for_it(tmp_path):
    """training.packing: true reaches the training pass (plugins/train_pass.py pads unless told to pack)."""
    from olive_flows.plugins.train_pass import OliveFlowsLoRA

    assert OliveFlowsLoRA._default_config(None)["packing"].default_value is False
    jobs = compile_builtin("quickstart", tmp_path, "adapters.contacts.training.packing=true")
    assert [j.config["passes"]["train"].get("packing") for j in jobs] == [True, None]


def test_mixed_precision_reaches_the_training_pass_unresolved(tmp_path):
    """training.mixed_precision is compiled as written (auto by default): the pass decides on the
    machine that trains, which the compiling one need not be."""
    jobs = compile_builtin("quickstart", tmp_path, "adapters.dates.training.mixed_precision=fp32")
    assert [j.config["passes"]["train"]["mixed_precision"] for j in jobs] == ["auto", "fp32"]


def test_plan_fingerprint_follows_configs_and_loaded_files_not_folder_times(tmp_path):
    """An unchanged re-run skips Olive when the plan fingerprint matches the package's, so it must
    change with the compiled configs, the recipe and every byte of the model and adapter folders the
    workflows load, and only with them."""
    from olive_flows.package.manifest import plan_fingerprint

    model, adapter = tmp_path / "model", tmp_path / "adapter"
    for folder in (model, adapter):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "weights.bin").write_bytes(b"\0" * 64)
    configs = [job.config for job in compile_builtin("quickstart", tmp_path / "out")]
    configs[0]["input_model"] = {**configs[0]["input_model"], "model_path": str(model), "adapter_path": str(adapter)}
    configs[1]["input_model"] = {**configs[1]["input_model"], "model_path": str(model)}
    first = plan_fingerprint("recipe", configs)
    (model / "sub" / "weights.bin").touch()
    assert plan_fingerprint("recipe", configs) == first, "a file's time is not its content"
    assert plan_fingerprint("another recipe", configs) != first
    for folder in (model, adapter):
        (folder / "sub" / "weights.bin").write_bytes(b"\1" + b"\0" * 63)
        assert plan_fingerprint("recipe", configs) != first, f"a changed byte in the {folder.name} folder"
        (folder / "sub" / "weights.bin").write_bytes(b"\0" * 64)
    assert plan_fingerprint("recipe", configs) == first
    configs[1]["passes"]["train"]["r"] = 8
    assert plan_fingerprint("recipe", configs) != first
