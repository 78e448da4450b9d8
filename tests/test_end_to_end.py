"""End-to-end runs on tiny random models: train, export, package, and generate with every adapter."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import re
import shutil

import numpy as np
import pytest
import yaml
from conftest import COMMIT, tiny_recipe, write_recipe

from olive_flows.cli.main import main
from olive_flows.console import Console
from olive_flows.evaluate.runtime import PackageRuntime, sliding_window
from olive_flows.files import sha256_file
from olive_flows.layout import adapter_files
from olive_flows.package.adapter_switch import FLAG, branch_nodes
from olive_flows.pipeline import run_recipe
from olive_flows.validate.load import load_recipe

BASE_FILES = {"model.onnx", "genai_config.json", "tokenizer.json", "tokenizer_config.json", "manifest.json"}


FP32_RELATIVE_LOGIT_TOLERANCE = 1e-6  # of the logits' range after a prompt; fp32 gave 2.6e-7 (3.6e-7 of a 1.39 range)


def first_logits(package, adapter: str | None) -> np.ndarray:
    """Logits for the next token after a fixed prompt, straight from onnxruntime-genai, on the CPU."""
    import onnxruntime_genai as og

    config = og.Config(str(package))
    config.clear_providers()
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)
    adapters = og.Adapters(model)
    for name, path in adapter_files(package).items():
        adapters.load(str(path), name)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=max(64, sliding_window(package)))  # Gemma 2's cache holds its window
    generator = og.Generator(model, params)
    if adapter:
        generator.set_active_adapter(adapters, adapter)
    generator.append_tokens(tokenizer.encode("Normalize this date: 5 March 2021"))
    return np.array(generator.get_logits())


def adapter_bytes(path, skip: tuple[str, ...] = (".ranks", FLAG)) -> int:
    """Bytes of the LoRA weights in an .onnx_adapter file: the tensors whose name does not end with
    one of ``skip`` (by default the split ranks of fused LoRA A weights, package/lora_fusion.py, and
    the flag that selects the adapter branch, package/adapter_switch.py)."""
    import onnxruntime as ort

    parameters = ort.AdapterFormat.read_adapter(str(path)).get_parameters()
    return sum(t.numpy().nbytes for name, t in parameters.items() if not name.endswith(skip))


@pytest.mark.parametrize(
    "model_type", ["llama", "phi3", "qwen2", "qwen3", "mistral", "gemma2", "gemma3_text", "granite", "smollm3"]
)
def test_tiny_model_trains_exports_and_switches_adapters(model_type, tiny_model, tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, tiny_recipe(tiny_model(model_type), tmp_path / "out")))
    result = run_recipe(recipe, offline=True, console=Console(io.StringIO()))

    package = result.packages["cpu"]
    assert package == tmp_path / "out" / "tiny" / "cpu"
    assert {p.name for p in package.iterdir()} >= BASE_FILES
    assert sorted(p.name for p in (package / "adapters").iterdir()) == ["contacts.onnx_adapter", "dates.onnx_adapter"]
    assert not list(package.parent.glob(".cpu.*")), "staging folders must not be left behind"

    manifest = json.loads((package / "manifest.json").read_text(encoding="utf-8"))
    on_disk = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for name, entry in manifest["files"].items():
        assert sha256_file(package / name) == entry["sha256"], name
        assert (package / name).stat().st_size == entry["size"], name
    assert manifest["adapters"]["contacts"]["r"] == 8 and manifest["adapters"]["dates"]["r"] == 4
    assert manifest["target"]["precision"] == "int4" and manifest["smoke_check"] == "passed"
    decoder = json.loads((package / "genai_config.json").read_text(encoding="utf-8"))["model"]["decoder"]
    assert decoder["session_options"]["intra_op_num_threads"] == 0, "a CPU package takes a thread per core"
    assert manifest["versions"]["onnxruntime-genai"] == importlib.metadata.version("onnxruntime-genai")

    base = first_logits(package, None)
    contacts, dates = first_logits(package, "contacts"), first_logits(package, "dates")
    assert np.isfinite(base).all() and np.isfinite(contacts).all() and np.isfinite(dates).all()
    assert not np.allclose(base, contacts) and not np.allclose(base, dates) and not np.allclose(contacts, dates)

    audit = tmp_path / "out" / "tiny" / "_data" / "contacts"
    assert sorted(p.name for p in audit.iterdir()) == ["eval.jsonl", "stats.json", "test.jsonl", "train.jsonl"]
    stats = json.loads((audit / "stats.json").read_text(encoding="utf-8"))
    assert stats["rows"]["train"] == len((audit / "train.jsonl").read_text(encoding="utf-8").splitlines())
    assert (
        stats["tokenization"]["loss_on"] == "assistant" and stats["tokenization"]["examples"] == stats["rows"]["train"]
    )
    assert 0 < stats["tokenization"]["learned_tokens"] < stats["tokenization"]["tokens"], (
        "prompt tokens are not learned"
    )

    timings = json.loads((result.run_dir / "timings.json").read_text(encoding="utf-8"))
    stages = ["prepare model and data", "cpu/contacts", "cpu/dates", "package cpu", "evaluate cpu"]
    assert list(timings) == stages and timings["evaluate cpu"] > 0 and min(timings.values()) >= 0, timings

    scores = json.loads((package / "eval.json").read_text(encoding="utf-8"))
    assert scores == result.scores["cpu"]
    assert set(scores["adapters"]) == {"contacts", "dates"}
    assert "contacts/json_fields" in scores["base"]["metrics"]


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3_text"])
def test_sliding_window_families_export_what_transformers_computes(model_type, tiny_model, tmp_path):
    """A prompt longer than the sliding window: the fp32 export's last logits are transformers'. Gemma 3
    goes through olive-flows' reading of its per-layer-type RoPE (transformers 5's nested form)."""
    import onnxruntime_genai as og
    import torch
    from onnxruntime_genai.models import builder
    from transformers import AutoModelForCausalLM

    from olive_flows.plugins.model_builder_pass import builder_options, gemma3_rope_read

    folder, out = str(tiny_model(model_type)), str(tmp_path / "onnx")
    options = builder.parse_extra_options(
        folder, folder, out, "fp32", "cpu", str(tmp_path / "cache"), builder_options({}, og.__version__)
    )
    with gemma3_rope_read():
        builder.create_model(folder, folder, out, "fp32", "cpu", str(tmp_path / "cache"), **options)
    tokens = list(range(5, 1205))  # past the tiny models' 1024-token window
    model = og.Model(out)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=1300)
    generator = og.Generator(model, params)
    generator.append_tokens(tokens)
    exported = np.array(generator.get_logits())[0, -1]
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(folder).eval()(torch.tensor([tokens])).logits[0, -1].numpy()
    np.testing.assert_allclose(exported, expected, atol=1e-4)


def test_phi_lora_recipe_offline_from_the_hub_cache(tiny_model, hub_cache, tmp_path):
    """The built-in phi-lora recipe as written, offline, with a tiny random Phi-3 in the Hugging Face
    cache under microsoft/Phi-3-mini-4k-instruct: a model downloaded once fine-tunes with no network."""
    snapshot = hub_cache("microsoft/Phi-3-mini-4k-instruct", tiny_model("phi3"))
    overrides = [f"output.dir={tmp_path}", "evaluation.max_rows=2"]
    for adapter in ("contacts", "dates"):
        training = f"adapters.{adapter}.training"
        overrides += [f"{training}.epochs=null", f"{training}.max_steps=2", f"{training}.batch_size=2"]
    recipe = load_recipe("phi-lora", overrides)
    result = run_recipe(recipe, offline=True, console=Console(io.StringIO()))

    assert set(result.packages) == {"cpu", "cuda"}
    for target, package in result.packages.items():
        manifest = json.loads((package / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["base_model"] == {
            "id": "microsoft/Phi-3-mini-4k-instruct",
            "kind": "hub",
            "revision": COMMIT,
            "path": str(snapshot),
        }
        assert (
            manifest["target"]["provider"] == {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[target]
        )
        assert manifest["adapters"]["contacts"]["target_modules"] == ["qkv_proj", "o_proj"]
        for adapter in (None, "contacts", "dates"):
            assert np.isfinite(first_logits(package, adapter)).all()
    assert json.loads((result.packages["cuda"] / "genai_config.json").read_text(encoding="utf-8"))["model"]["decoder"][
        "session_options"
    ]["provider_options"], "the CUDA package asks for the CUDA provider"
    cuda_options = json.loads((result.packages["cuda"] / "genai_config.json").read_text(encoding="utf-8"))["model"][
        "decoder"
    ]
    assert "intra_op_num_threads" not in cuda_options["session_options"], "only the CPU profile sets threads"


def test_text_and_instruction_datasets_train_and_export(tiny_model, tmp_path):
    """Plain-text rows (loss on all of it) and instruction rows (turned into chat turns) both train."""
    (tmp_path / "notes.jsonl").write_text(
        "".join(json.dumps({"text": f"Note {i}: the sky is blue."}) + "\n" for i in range(12))
    )
    rows = [{"instruction": f"Add one to {i}", "output": str(i + 1)} for i in range(12)]
    (tmp_path / "math.json").write_text(json.dumps(rows), encoding="utf-8")
    recipe = tiny_recipe(tiny_model("llama"), tmp_path / "out")
    recipe["datasets"] = {"notes": {"path": "notes.jsonl", "format": "text"}, "math": {"path": "math.json"}}
    recipe["adapters"]["contacts"]["dataset"] = "notes"
    recipe["adapters"]["dates"]["dataset"] = "math"
    recipe["evaluation"]["metrics"] = {"math": ["exact_match"]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = run_recipe(load_recipe(path), console=Console(io.StringIO()))
    scores = result.scores["cpu"]
    assert set(scores["base"]["metrics"]) == {"dates/exact_match"}
    assert scores["adapters"]["contacts"]["metrics"] == {}, "a text dataset has no task metrics"
    assert scores["adapters"]["contacts"]["perplexity"]["onnx"] > 1, "but its perplexity is measured"
    history = json.loads(
        (tmp_path / "out" / "tiny" / "_peft" / "contacts" / "training_log.json").read_text(encoding="utf-8")
    )
    assert any("loss" in entry for entry in history), "the text adapter trained"


def test_fp32_package_matches_pytorch_and_reports(tiny_model, tmp_path, capsys):
    """fp32 export: logits within tolerance of PyTorch + PEFT; report, eval and chat commands work; a
    PackageRuntime thread count reaches onnxruntime."""
    recipe = tiny_recipe(tiny_model("llama"), tmp_path / "out", cpu={"device": "cpu", "precision": "fp32"})
    recipe["adapters"]["dates"]["training"]["report_to"] = ["tensorboard"]
    recipe["evaluation"]["metrics"]["dates"] = ["exact_match", "rouge_l", "bleu", "regex:\\d{4}-\\d{2}-\\d{2}"]
    path = write_recipe(tmp_path, recipe)
    result = run_recipe(load_recipe(path), console=Console(io.StringIO()))
    package = result.packages["cpu"]

    scores = json.loads((package / "eval.json").read_text(encoding="utf-8"))
    parity = scores["parity"]
    assert parity["ok"] and "fp32_logit_tolerance" in parity["bounds"]
    largest = max(entry["max_abs_logit_diff"] for entry in parity["by"].values())
    spread = float(np.ptp(first_logits(package, "dates")))  # the logits' range after a prompt
    assert largest <= FP32_RELATIVE_LOGIT_TOLERANCE * spread, (largest, spread)
    for entry in scores["adapters"].values():  # answers read off scoring, of the rows answered
        assert 0 <= entry["answers_from_scoring"] <= entry["rows"]
    for entry in (scores["base"], *scores["adapters"].values()):
        assert entry["perplexity"]["pytorch"] == pytest.approx(entry["perplexity"]["onnx"], rel=1e-3)
        assert entry["decode_tokens_per_s"] > 0 and entry["time_to_first_token_s"] > 0
    assert set(scores["adapters"]["dates"]["metrics"]) == {
        "exact_match",
        "rouge_l",
        "bleu",
        "regex:\\d{4}-\\d{2}-\\d{2}",
    }
    assert scores["samples"] and {"prompt", "base", "contacts", "dates"} <= set(scores["samples"][0])

    report = (package / "report.md").read_text(encoding="utf-8")
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert sorted(linked) == [
        "report/loss-contacts.png",
        "report/loss-dates.png",
        "report/lr-contacts.png",
        "report/lr-dates.png",
    ]
    assert all((package / link).read_bytes().startswith(b"\x89PNG") for link in linked)
    page = (package / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 4 and "Parity" in page and "Resolved recipe" in page
    assert list((result.run_dir / "tensorboard" / "dates").rglob("events.out.tfevents.*")), (
        "TensorBoard logs in the run folder"
    )

    assert main(["eval", str(package), "evaluation.max_rows=1"]) == 0
    again = json.loads((package / "eval.json").read_text(encoding="utf-8"))
    assert again["adapters"]["dates"]["rows"] == 1
    manifest = json.loads((package / "manifest.json").read_text(encoding="utf-8"))
    assert all(sha256_file(package / name) == entry["sha256"] for name, entry in manifest["files"].items())

    assert main(["chat", str(package), "--adapter", "dates", "--prompt", "5 March 2021", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.strip()

    loaded = [PackageRuntime(package)]  # onnxruntime-genai starts its own threads with its first model
    threads = [len(os.listdir("/proc/self/task"))]
    for count in (1, 3):
        loaded.append(PackageRuntime(package, threads=count))
        threads.append(len(os.listdir("/proc/self/task")))
    assert (threads[1] - threads[0], threads[2] - threads[1]) == (0, 2), "intra-op workers: threads - 1"

    assert main(["verify", str(package)]) == 0
    assert ": OK" in capsys.readouterr().out
    adapter = package / "adapters" / "dates.onnx_adapter"
    adapter.write_bytes(adapter.read_bytes()[:100])
    (package / "tokenizer.json").unlink()
    (package / "extra.bin").write_bytes(b"x")
    assert main(["verify", str(package)]) == 5
    out = capsys.readouterr().out
    assert "adapters/dates.onnx_adapter: size 100 bytes" in out and "tokenizer.json: missing" in out
    assert "extra.bin: not in the manifest" in out


def test_export_reuses_training_for_int8_q4_1_and_bf16_targets(tiny_model, tmp_path, capsys):
    """`olive-flows export` adds a target without training again; int8 (the builder's own 8-bit
    MatMulNBits, LM head included) and int4 q4_1 (fp32 build + olive-flows' Q4_1 pass) keep the LoRA
    MatMuls float so adapters still switch; int8 adapter weights leave the base exact and the adapters
    close; a CUDA bf16 package gets bf16 adapter files."""
    import onnx

    path = write_recipe(tmp_path, tiny_recipe(tiny_model("llama"), tmp_path / "out"))
    assert main(["export", str(path), "--target", "cpu8"]) == 2, "nothing trained yet"
    assert "not trained yet" in capsys.readouterr().err
    first = run_recipe(load_recipe(path), console=Console(io.StringIO()))
    int4_package = tmp_path / "out" / "tiny" / "cpu"
    before = sha256_file(int4_package / "model.onnx")

    log = io.StringIO()
    again = run_recipe(load_recipe(path), console=Console(log))
    assert "package cpu: up to date" in log.getvalue(), "an unchanged re-run neither rebuilds nor re-evaluates"
    assert "Olive is not started" in log.getvalue() and "Olive's cache" not in log.getvalue()
    assert again.scores == first.scores
    assert main(["eval", str(int4_package), "evaluation.max_rows=1"]) == 0
    manifest = json.loads((int4_package / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["evaluation_overrides"] == ["evaluation.max_rows=1"]
    log = io.StringIO()
    third = run_recipe(load_recipe(path), console=Console(log))
    assert "up to date" not in log.getvalue(), "after an eval with overrides a run evaluates as the recipe says"
    assert third.scores["cpu"]["adapters"]["dates"]["rows"] == first.scores["cpu"]["adapters"]["dates"]["rows"] > 1
    assert "evaluation_overrides" not in json.loads((int4_package / "manifest.json").read_text(encoding="utf-8"))
    (int4_package / "adapters" / "dates.onnx_adapter").write_bytes(b"tampered")
    log = io.StringIO()
    run_recipe(load_recipe(path), console=Console(log))
    assert "up to date" not in log.getvalue(), "a damaged package is rebuilt"
    peft_config = tmp_path / "out" / "tiny" / "_peft" / "dates" / "adapter_config.json"
    published = peft_config.read_bytes()
    peft_config.write_bytes(published + b"\n")
    log = io.StringIO()
    run_recipe(load_recipe(path), console=Console(log))
    assert "Olive's cache" in log.getvalue() and "package cpu: up to date" in log.getvalue(), "the PEFT copy is back"
    assert peft_config.read_bytes() == published
    shutil.rmtree(peft_config.parent)
    log = io.StringIO()
    run_recipe(load_recipe(path), console=Console(log))
    assert "Olive's cache" in log.getvalue() and peft_config.read_bytes() == published

    assert main(["export", str(path), "--target", "cpu", "--precision", "int8"]) == 0
    out = capsys.readouterr().out
    assert out.count("(OliveFlowsLoRA): from Olive's cache") == 2 and " training: " not in out
    assert sha256_file(int4_package / "model.onnx") != before, "the cpu package was rebuilt at int8"
    graph = onnx.load(int4_package / "model.onnx", load_external_data=False).graph
    nodes = branch_nodes(graph)  # with an adapter active
    matmuls = [n for n in nodes if n.op_type in ("MatMul", "MatMulNBits")]
    bits = {n.name: next(a.i for a in n.attribute if a.name == "bits") for n in matmuls if n.op_type == "MatMulNBits"}
    lora = [n for n in nodes if "lora_" in n.name]
    assert lora and all(n.op_type == "MatMul" for n in lora), "LoRA MatMuls must stay float"
    assert all(n.op_type == "MatMulNBits" for n in matmuls if n not in lora), "every base MatMul is quantized"
    assert bits and set(bits.values()) == {8}
    lm_head = [n for n in nodes if n.name.startswith("/lm_head/")]
    assert [n.op_type for n in lm_head] == ["MatMulNBits"] and bits[lm_head[0].name] == 8, "the LM head is 8-bit"
    assert "logits" in [o.name for o in graph.output], "onnxruntime-genai finds the logits by name"
    manifest = json.loads((int4_package / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["target"]["precision"] == "int8" and manifest["smoke_check"] == "passed"
    runtime = PackageRuntime(int4_package)
    prompt = list(runtime.tokenizer.encode("Normalize this date: 5 March 2021"))
    assert sorted(runtime.adapter_names) == ["contacts", "dates"]
    for adapter in (None, *runtime.adapter_names):
        generator = runtime.generator(len(prompt) + 8, adapter)
        generator.append_tokens(prompt)
        while not generator.is_done():
            generator.generate_next_token()
        assert len(generator.get_sequence(0)) > len(prompt), f"int8 generates with adapter {adapter}"
    del runtime, generator
    logits = {adapter: first_logits(int4_package, adapter) for adapter in (None, "contacts", "dates")}
    assert all(np.isfinite(v).all() for v in logits.values())
    assert not np.allclose(logits[None], logits["contacts"]) and not np.allclose(logits[None], logits["dates"])
    assert not np.allclose(logits["contacts"], logits["dates"]), "the int8 package's adapters switch"

    # q4_1: fp32 build + olive-flows' own Olive pass (loaded through the package config)
    assert main(["export", str(path), "targets.cpu.int4.algorithm=q4_1", "--target", "cpu", "--precision", "int4"]) == 0
    out = capsys.readouterr().out
    assert out.count("(OliveFlowsLoRA): from Olive's cache") == 2 and " training: " not in out
    graph = onnx.load(int4_package / "model.onnx", load_external_data=False).graph
    nodes = branch_nodes(graph)  # with an adapter active
    nbits = {n.name: next(a.i for a in n.attribute if a.name == "bits") for n in nodes if n.op_type == "MatMulNBits"}
    assert nbits.pop("/lm_head/MatMul_Q8") == 8
    assert nbits and all(bits == 4 and name.endswith("_Q4_1") for name, bits in nbits.items())
    lora = [n for n in nodes if "lora_" in n.name]
    assert {n.op_type for n in lora} == {"MatMul", "Split", "Concat"}, "LoRA MatMuls must stay float"
    layers = len([n for n in nodes if n.op_type == "GroupQueryAttention"])
    fused = [n for n in lora if n.name.endswith("/attn/packed/lora_A/MatMul")]
    assert len(fused) == layers, "q, k and v (packed by the Q4_1 pass) share one LoRA A MatMul per layer"
    for branch in ("then_branch", "else_branch"):  # merge_nodes: no Split between q/k/v and the attention
        attention = [n for n in branch_nodes(graph, branch) if n.op_type == "GroupQueryAttention"]
        assert len(attention) == layers and all(list(n.input[1:3]) == ["", ""] for n in attention)
    joins = {n.op_type for n in nodes if n.name.endswith("/lora/Add")}
    assert joins == {"Sum"}, "an active adapter joins each projection in the Sum that adds its Q4_1 offsets"
    manifest = json.loads((int4_package / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["target"]["int4"]["algorithm"] == "q4_1" and manifest["smoke_check"] == "passed"

    # int8 adapter weights: the same base, each LoRA MatMul an int8 DynamicQuantizeMatMul
    import onnxruntime as ort

    float_logits = {adapter: first_logits(int4_package, adapter) for adapter in (None, "dates")}
    float_bytes = adapter_bytes(int4_package / "adapters" / "dates.onnx_adapter")
    q4_1_int8 = ["targets.cpu.int4.algorithm=q4_1", "targets.cpu.adapter_weights=int8"]
    assert main(["export", str(path), *q4_1_int8, "--target", "cpu", "--precision", "int4"]) == 0
    assert capsys.readouterr().out.count("(OliveFlowsLoRA): from Olive's cache") == 2
    graph = onnx.load(int4_package / "model.onnx", load_external_data=False).graph
    nodes = branch_nodes(graph)  # with an adapter active
    names = [i.name for i in graph.input]
    assert len(names) == len(set(names)), "each graph input once (Olive's ExtractAdapters lists LoRA inputs twice)"
    inputs = set(names)
    lora = [n for n in nodes if n.op_type in ("MatMul", "DynamicQuantizeMatMul") and n.input[1] in inputs]
    assert lora and {n.op_type for n in lora} == {"DynamicQuantizeMatMul"}, "int8 LoRA weights times 8-bit activations"
    adapter_inputs = inputs & {i.name for i in graph.initializer} - {FLAG}
    assert not [n for n in branch_nodes(graph, "else_branch") if adapter_inputs & set(n.input)], "the base runs no LoRA"
    parameters = ort.AdapterFormat.read_adapter(str(int4_package / "adapters" / "dates.onnx_adapter")).get_parameters()
    weights = {name: t for name, t in parameters.items() if not name.endswith((".scale", ".ranks")) and name != FLAG}
    assert {t.data_type() for t in weights.values()} == {"tensor(int8)"}
    assert (
        adapter_bytes(int4_package / "adapters" / "dates.onnx_adapter", skip=(".scale", ".ranks", FLAG)) * 4
        == float_bytes
    )
    manifest = json.loads((int4_package / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["target"]["adapter_weights"] == "int8" and manifest["smoke_check"] == "passed"
    np.testing.assert_array_equal(first_logits(int4_package, None), float_logits[None])
    effect = np.abs(float_logits["dates"] - float_logits[None]).max()
    assert effect > 0.1
    assert np.abs(first_logits(int4_package, "dates") - float_logits["dates"]).max() < 0.05 * effect

    # bf16 (CUDA): Olive's ExtractAdapters cannot write bf16 .onnx_adapter files, so its .npz is
    # converted at packaging; the adapters must come out bf16, typed like the graph's inputs.
    assert main(["export", str(path), "--target", "gpu", "--precision", "bf16"]) == 10, "built, not verified here"
    out = capsys.readouterr().out
    assert out.count("(OliveFlowsLoRA): from Olive's cache") == 2 and " training: " not in out
    bf16_package = tmp_path / "out" / "tiny" / "gpu"
    inputs = {i.name: i.type.tensor_type.elem_type for i in onnx.load(bf16_package / "model.onnx").graph.input}
    for adapter in ("contacts", "dates"):
        tensors = ort.AdapterFormat.read_adapter(str(bf16_package / "adapters" / f"{adapter}.onnx_adapter"))
        parameters = tensors.get_parameters()
        assert parameters and all(inputs[name] == onnx.TensorProto.BFLOAT16 for name in parameters)
        assert {t.data_type() for t in parameters.values()} == {"tensor(bfloat16)"}
    manifest = json.loads((bf16_package / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["smoke_check"].startswith("not verified here: the cuda provider is not available here")


def test_a_killed_run_resumes_from_what_it_finished(tiny_model, tmp_path):
    """Kill a real run in the middle of the second adapter's training, after a checkpoint; the next
    run reuses the first adapter from Olive's cache, continues the second from its checkpoint,
    cleans the dead run's leftovers and delivers the package."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    recipe = tiny_recipe(tiny_model("llama"), tmp_path / "out")
    dates = recipe["adapters"]["dates"]
    dates["training"] = {**dates["training"], "max_steps": 60}
    path = write_recipe(tmp_path, recipe)
    run = subprocess.Popen(
        [sys.executable, "-m", "olive_flows", "run", str(path)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoints = tmp_path / "out" / "tiny" / "_work" / "checkpoints"
    deadline = time.monotonic() + 300
    complete = "dates-*/checkpoint-*/trainer_state.json"  # the trainer writes it last
    while not list(checkpoints.glob(complete)) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    saved = sorted(p.parent for p in checkpoints.glob(complete))
    assert saved, "the run was killed after the first checkpoint of the second adapter"
    cut_off = saved[-1].parent / "checkpoint-999"  # as a kill while a checkpoint is written leaves it
    cut_off.mkdir(exist_ok=True)
    (cut_off / "adapter_model.safetensors").write_bytes(b"partial")
    (tmp_path / "out" / "tiny" / ".cpu.staging-1").mkdir()  # as a run killed while packaging leaves it

    log = io.StringIO()
    result = run_recipe(load_recipe(path), console=Console(log))
    contacts, dates_log = log.getvalue().split("cpu/contacts:")[1].split("cpu/dates:")
    assert "train (OliveFlowsLoRA): from Olive's cache" in contacts, "the finished adapter is not trained again"
    step = int(saved[-1].name.split("-")[1])
    assert f"resuming training at step {step} of 60 from checkpoint-{step}: an earlier run" in dates_log
    history = json.loads(
        (tmp_path / "out" / "tiny" / "_peft" / "dates" / "training_log.json").read_text(encoding="utf-8")
    )
    assert history[0]["step"] > step, "training continued from the checkpoint"
    assert not cut_off.exists(), "a checkpoint cut off while being written is dropped, not resumed from"
    assert (result.packages["cpu"] / "manifest.json").is_file()
    assert not list((tmp_path / "out" / "tiny").glob(".cpu.staging-*"))
