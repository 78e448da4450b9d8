"""Decode speed of a package against PyTorch fp32 eager + PEFT and llama.cpp, on the same prompt.

Every engine generates exactly ``new_tokens`` tokens greedily after the same chat prompt; time to
first token covers the prompt's prefill, tokens/s the tokens after the first. Also the memory
bandwidth bound: bytes of weights read per token over a measured copy bandwidth.
"""

from __future__ import annotations

import atexit
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from olive_flows.evaluate.runtime import PackageRuntime
from olive_flows.evaluate.speed import decode_speed
from olive_flows.package.adapter_switch import FLAG, SWITCH, branch_nodes

Engine = Callable[[], dict[str, float]]  # one timed generation: time_to_first_token_s, tokens_per_s


def package_engines(
    runtime: PackageRuntime, prompt: list[dict], adapters: list[str | None], new_tokens: int
) -> dict[str, Engine]:
    """One engine per adapter of ``runtime`` (None: the base), named by the adapter or "base"."""
    return {adapter or "base": partial(decode_speed, runtime, prompt, adapter, new_tokens, 1) for adapter in adapters}


def round_robin(engines: dict[str, Engine], repeats: int) -> dict[str, dict[str, float]]:
    """Median figures per engine, one run of each in turn per round after an untimed round, so that
    a shared machine's slow spells hit every engine alike instead of whichever was being measured then."""
    for engine in engines.values():
        engine()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, engine in engines.items():
            runs[name].append(engine())
    return {name: {key: statistics.median(run[key] for run in done) for key in done[0]} for name, done in runs.items()}


# How a PyTorch user might run the adapter on a CPU: as trained (PEFT, unmerged), and the deployments
# tried for the fastest (the adapter merged into the weights; in fp32, in bf16, and with
# torch.ao's dynamic int8 quantization of every Linear layer, weights int8 and activations
# quantized per token). decode_vs_pytorch is taken against the fastest merged one.
PYTORCH_SETUPS = ("fp32 + PEFT, unmerged", "fp32, merged", "bf16, merged", "dynamic int8, merged")


def pytorch_speeds(
    model_path: str, adapter_dir: Path, prompt: list[dict], new_tokens: int, repeats: int, threads: int
) -> dict[str, dict[str, float]]:
    """Decode speed of each of PYTORCH_SETUPS, with the PEFT adapter in ``adapter_dir``, on ``threads``
    threads, timed through transformers' ``generate`` as a PyTorch user runs it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)

    def model(setup: str) -> torch.nn.Module:
        dtype = torch.bfloat16 if setup.startswith("bf16") else torch.float32
        peft = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype), str(adapter_dir)
        )
        loaded = peft if "unmerged" in setup else peft.merge_and_unload()
        if setup.startswith("dynamic int8"):
            loaded = torch.ao.quantization.quantize_dynamic(loaded, {torch.nn.Linear}, dtype=torch.qint8)
        return loaded.eval()

    def speed(loaded: torch.nn.Module) -> dict[str, float]:
        def timed(tokens: int) -> float:
            started = time.perf_counter()
            with torch.inference_mode():
                loaded.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
            return time.perf_counter() - started

        timed(2)  # warm-up
        ttft = statistics.median(timed(1) for _ in range(repeats))
        whole = statistics.median(timed(new_tokens) for _ in range(repeats))
        return {"time_to_first_token_s": round(ttft, 4), "tokens_per_s": round((new_tokens - 1) / (whole - ttft), 1)}

    return {setup: speed(model(setup)) for setup in PYTORCH_SETUPS}


def llamacpp_engine(gguf: Path, prompt: list[dict], new_tokens: int, threads: int) -> Engine | None:
    """llama.cpp through llama-cpp-python on a GGUF file, timed like the package; None when
    llama-cpp-python is not installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=str(gguf), n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    atexit.register(llm.close)  # its __del__ at interpreter exit finds llama_cpp's functions torn down
    tokens = llm.tokenize(_chat_text(prompt).encode(), add_bos=False, special=True)

    def run() -> dict[str, float]:
        llm.reset()
        started = time.perf_counter()
        generator = llm.generate(tokens, top_k=1, temp=0.0, reset=True)
        next(generator)
        after_first = time.perf_counter()
        for produced, _ in enumerate(generator, start=2):
            if produced >= new_tokens:
                break
        finished = time.perf_counter()
        return {
            "time_to_first_token_s": round(after_first - started, 4),
            "tokens_per_s": round((new_tokens - 1) / (finished - after_first), 1),
        }

    return run


def _chat_text(prompt: list[dict]) -> str:
    """The prompt rendered with the chat template of the model the GGUF came from (same tokens as the others)."""
    from transformers import AutoTokenizer

    from olive_flows.models.builtin import materialize

    tokenizer = AutoTokenizer.from_pretrained(materialize("smollm2-135m-instruct"))
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


def copy_bandwidth_gb_s(megabytes: int = 512, repeats: int = 5) -> float:
    """Memory bandwidth of a large array copy (read + write), the ceiling for weight streaming."""
    source = np.ones(megabytes * 2**20 // 8)
    target = np.empty_like(source)
    np.copyto(target, source)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(target, source)
        times.append(time.perf_counter() - started)
    return 2 * source.nbytes / statistics.median(times) / 1e9


def runtime_graph(model_file: Path, folder: Path) -> Any:
    """The graph as onnxruntime runs it, written to ``folder``: after its load-time optimizations,
    which fold constant nodes (the Q4_1 pass's fp16 scales and minima, cast to the fp32 the kernels
    take) into the initializers they compute. Its initializers are what a decoded token reads, its
    nodes what it runs; the file on disk holds fewer bytes and more nodes."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # not the warning for each LoRA weight a graph input overrides
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folder / "model.onnx")
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "model.data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "0")
    ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    return onnx.load(folder / "model.onnx", load_external_data=False)


def unswitched_copy(package: Path, folder: Path) -> Path:
    """A copy of ``package`` in ``folder`` whose base runs every LoRA node on its zero defaults at
    every token, as packages did before the adapter switch (olive_flows/package/adapter_switch.py):
    the If's adapter branch in place of the If, no adapter files. Its base's decode speed beside the
    package's shows what the switch saves."""
    import shutil

    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    for path in package.iterdir():
        if path.is_file() and path.name != "model.onnx":
            shutil.copy2(path, folder / path.name)
    model = onnx.load(str(package / "model.onnx"))
    graph = model.graph
    switch = next(node for node in graph.node if node.name == SWITCH)
    body = next(a.g for a in switch.attribute if a.name == "then_branch")
    named = {value.name: output for value, output in zip(body.output, switch.output, strict=True)}
    for node in body.node:
        node.output[:] = [named.get(name, name) for name in node.output]
        node.input[:] = [named.get(name, name) for name in node.input]
    outer = [node for node in graph.node if node.name not in (SWITCH, f"{SWITCH}/Cast")]
    del graph.node[:]
    graph.node.extend([*outer, *body.node])
    graph.input.remove(next(value for value in graph.input if value.name == FLAG))
    graph.initializer.remove(next(tensor for tensor in graph.initializer if tensor.name == FLAG))
    onnx.save(model, str(folder / "model.onnx"))
    return folder


def weight_bytes_per_token(graph: Any) -> int:
    """Bytes of weights each decoded token of the base reads in ``graph`` (runtime_graph): every
    initializer the base runs on (not the LoRA defaults only the adapter branch reads) but those only
    an embedding lookup reads (a float table, or the reshaped scales of a table shared with the LM
    head), of which a token reads one row."""
    from onnx.external_data_helper import uses_external_data

    readers: dict[str, set[str]] = {}
    for node in branch_nodes(graph.graph, "else_branch"):
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    total = 0
    for tensor in graph.graph.initializer:
        if readers.get(tensor.name, set()) <= {"Gather", "GatherBlockQuantized"}:
            continue
        if uses_external_data(tensor):
            total += int(next(e.value for e in tensor.external_data if e.key == "length"))
        else:
            total += len(tensor.raw_data) or int(np.prod(tensor.dims)) * 4
    return total


def gguf_bytes_per_token(gguf: Path) -> int:
    """Bytes of weights llama.cpp reads per token from a GGUF file: every tensor but the embedding
    table, of which it reads one row, unless the table is also the output layer (tied, no
    output.weight), which reads all of it."""
    from gguf import GGUFReader

    tensors = {tensor.name: int(tensor.n_bytes) for tensor in GGUFReader(gguf).tensors}
    if "output.weight" in tensors:
        tensors.pop("token_embd.weight", None)
    return sum(tensors.values())
