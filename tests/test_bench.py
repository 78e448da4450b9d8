"""The benchmark's own code paths still run (the figures come from `make bench`, not from here)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, write_tiny_quickstart


@pytest.mark.slow
def test_train_padding_runs_as_the_readme_shows(tmp_path):
    """`bench/train_padding.py` on one step and one repeat: plan, Olive's LoRA pass and the recorder."""
    out = tmp_path / "padding.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "train_padding.py"), "--steps", "1", "--repeats", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert figures["steps"] == 1 and figures["ratio_olive_flows_vs_olive_default"] > 0
    assert figures["ratio_packed_vs_padded"] > 0, "the packed side trained too"
    assert figures["ratio_packed_vs_padded_multi_turn"] > 0, "and both multi-turn sides"
    assert figures["multi_turn_mean_tokens_per_row"] > 1.5 * figures["mean_tokens_per_row"], "rows of 1 to 4 exchanges"


@pytest.mark.slow
def test_data_parallel_figures_on_a_tiny_quickstart(tmp_path, tiny_model):
    """bench/data_parallel.py's runs (1 and 2 processes) on the quickstart with a tiny random model."""
    sys.path.insert(0, str(REPO / "bench"))
    import data_parallel

    evaluation = {"max_new_tokens": 4, "decode_tokens": 4}
    recipe = write_tiny_quickstart(tmp_path / "quickstart.yaml", tiny_model("llama"), 3, evaluation)
    figures = data_parallel.data_parallel_figures([1, 2], 3, print, recipe=str(recipe))
    assert figures["runs"]["1"]["vs_one_process"] == 1.0
    assert all(run["tokens_per_s"] > 0 for run in figures["runs"].values())


@pytest.mark.slow
def test_parity_bounds_variants_on_a_tiny_package(tiny_package, tmp_path):
    """bench/parity_bounds.py's copies, breakage and evaluation, on the tiny package (the README's command
    runs it on make finetune's quickstart package)."""
    out = tmp_path / "bounds.json"
    command = [sys.executable, str(REPO / "bench" / "parity_bounds.py"), "--variants", "healthy", "zeroed", "swapped"]
    result = subprocess.run(
        [*command, "--package", str(tiny_package), "--output", str(out)], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert set(figures) == {"healthy", "zeroed", "swapped"}
    for variant in figures.values():
        assert set(variant) == {"base", "contacts", "dates"}
    assert figures["zeroed"]["dates"]["kl_nats"] > 10 * figures["healthy"]["dates"]["kl_nats"], figures
    assert not list(tiny_package.parent.glob("parity-*")), "the copies are removed"


@pytest.mark.slow
def test_serving_figures_on_a_tiny_package(tiny_package):
    """bench/serving.py against real servers on 127.0.0.1 (a few tokens): every set-up and client count
    is measured, the default server's single requests take turns with the in-process decode, and
    llama-cpp-python's server either runs or is reported as skipped."""
    sys.path.insert(0, str(REPO / "bench"))
    import decode
    import serving

    from olive_flows.evaluate.runtime import PackageRuntime
    from olive_flows.models.builtin import gguf_file

    prompt = [{"role": "user", "content": "Hi"}]
    direct = decode.package_engines(PackageRuntime(tiny_package), prompt, [None], 8)["base"]
    figures = serving.serve_figures(
        tiny_package, ["contacts", "dates"], gguf_file("smollm2-135m-instruct"), prompt, 8, 1, print, direct
    )
    for label, setup in figures["configurations"].items():
        assert [e["clients"] for e in setup["load"]] == list(serving.CLIENTS)
        assert setup["single"]["tokens_per_s"] > 0 and all(e["aggregate_tokens_per_s"] > 0 for e in setup["load"])
        assert ("direct" in setup["single"]) == (label == "default")
    assert figures["configurations"]["default"]["single"]["direct"]["tokens_per_s"] > 0
    llama = figures["llamacpp_server"]
    assert "skipped" in llama or llama["base_4_clients"]["aggregate_tokens_per_s"] > 0


@pytest.mark.slow
def test_the_plain_baseline_learns_exactly_what_olive_flows_learns(tmp_path):
    """train_vs_peft's baseline script tokenizes the quickstart's contacts rows into the same ids and the
    same labels (prompt -100, answer and end-of-turn learned) as olive-flows' data component."""
    sys.path.insert(0, str(REPO / "bench"))
    import training
    from train_padding import contacts_training
    from transformers import AutoTokenizer

    from olive_flows.data.tokenize import encode
    from olive_flows.models.builtin import materialize

    recipe, data, _, _ = contacts_training(1, tmp_path)
    max_seq_len = recipe.adapters["contacts"]["training"]["max_seq_len"]
    tokenizer = AutoTokenizer.from_pretrained(materialize("smollm2-135m-instruct"))
    plain = training.plain_rows(tokenizer, str(data.train_file), max_seq_len, answers_only=True)
    ours = [
        encode(tokenizer, json.loads(line), max_seq_len)
        for line in data.train_file.read_text(encoding="utf-8").splitlines()
    ]
    assert len(plain) == len(ours) > 100
    assert plain["input_ids"] == [row.input_ids for row in ours]
    assert plain["labels"] == [row.labels for row in ours]
    every = training.plain_rows(tokenizer, str(data.train_file), max_seq_len, answers_only=False)
    assert "labels" not in every.column_names, "the every-token script's collator copies the ids"


@pytest.mark.slow
def test_every_pytorch_setup_decodes(tiny_package):
    """decode_vs_pytorch's set-ups (PEFT unmerged; merged in fp32, bf16 and dynamic int8) all generate."""
    sys.path.insert(0, str(REPO / "bench"))
    import decode

    manifest = json.loads((tiny_package / "manifest.json").read_text(encoding="utf-8"))
    peft = tiny_package.parent / "_peft" / "contacts"
    speeds = decode.pytorch_speeds(manifest["base_model"]["path"], peft, [{"role": "user", "content": "Hi"}], 4, 1, 1)
    assert list(speeds) == list(decode.PYTORCH_SETUPS)
    assert all(speed["tokens_per_s"] > 0 and speed["time_to_first_token_s"] > 0 for speed in speeds.values())


@pytest.mark.slow
def test_the_package_without_its_adapter_switch_runs_the_base_exactly_as_shipped(tiny_package, tmp_path):
    """adapter_switch_base_speedup's baseline (bench/decode.py's unswitched_copy): the If's adapter
    branch in its place, every LoRA node run on its defaults, and the base's logits unchanged."""
    import numpy as np
    import onnx

    from olive_flows.evaluate.runtime import PackageRuntime

    sys.path.insert(0, str(REPO / "bench"))
    import decode

    copy = decode.unswitched_copy(tiny_package, tmp_path / "unswitched")
    graph = onnx.load(copy / "model.onnx", load_external_data=False).graph
    assert "If" not in {n.op_type for n in graph.node} and any("lora_" in n.name for n in graph.node)
    assert not (copy / "adapters").exists()

    def first_logits(package):
        runtime = PackageRuntime(package)
        tokens = runtime.prompt_tokens([{"role": "user", "content": "Hi"}])
        generator = runtime.generator(len(tokens) + 2, None)
        generator.append_tokens(tokens)
        return np.asarray(generator.get_output("logits"))

    np.testing.assert_array_equal(first_logits(copy), first_logits(tiny_package))
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with_lora = decode.weight_bytes_per_token(decode.runtime_graph(copy / "model.onnx", tmp_path / "a"))
    without = decode.weight_bytes_per_token(decode.runtime_graph(tiny_package / "model.onnx", tmp_path / "b"))
    assert abs(with_lora - without) < 0.01 * without, "the base's weights are read inside the If's branch"
