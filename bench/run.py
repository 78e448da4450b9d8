"""`make bench`: olive-flows' speed and size, side by side with what users would otherwise use.

Writes bench/results.json (raw medians and the ratios) and bench/RESULTS.md. Every comparison is
measured in this one run on this machine; each figure is the median of --repeats runs, the package
and llama.cpp decode speeds (a fraction of a second each, where a shared machine's slow spells
move single runs by 10% and more) of --decode-rounds rounds.

    python bench/run.py [--repeats 5] [--decode-rounds 15] [--tokens 64] [--train-steps 12]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import adapters
import data_parallel
import decode
import serving
import train_padding
import training

from olive_flows.evaluate.evaluation import package_bytes
from olive_flows.evaluate.runtime import PackageRuntime
from olive_flows.layout import Workspace
from olive_flows.package.manifest import versions
from olive_flows.plugins import PACKAGE_CONFIG_FILE
from olive_flows.recipe.catalog import builtin_recipes

BENCH = Path(__file__).parent
REPO = BENCH.parent
# llama.cpp, PyTorch and the package tuned by hand decode on all the CPUs; the package as shipped runs
# on the threads its genai_config.json gives (olive-flows' CPU packages: one per physical core).
THREADS = os.cpu_count() or 1
# engine names that are not adapter names
ALL_CPUS, LLAMACPP, UNSWITCHED = "package on all the CPUs", "llama.cpp", "package without the adapter switch"
TRAIN_REPEATS = 3  # per side, each side first once (training runs are long: fewer than --repeats)
PYTORCH_ADAPTER = "dates"  # the quickstart adapter PyTorch decodes with, against the package's
PROMPT = [{"role": "user", "content": "Write a short paragraph about the history of the bicycle."}]
# The training table's rows: who trains, and which tokens it learns (bench/training.py).
TRAINERS = {
    "olive_flows": ("olive-flows (Olive's LoRA pass)", "answer tokens"),
    "peft_answers": ("peft + Trainer, prompt labels -100", "answer tokens"),
    "peft_every_token": ("peft + Trainer", "every token"),
    "peft_answers_bf16": ("peft + Trainer, prompt labels -100, bf16=True", "answer tokens"),
}
# What each ratio compares, in words (RESULTS.md and the README's table, scripts/readme_figures.py).
LABELS = {
    "decode_vs_pytorch": "int4 package decode, dates adapter, as shipped, vs the fastest PyTorch set-up of the same "
    "adapter (merged; fp32, bf16 or dynamic int8)",
    "decode_vs_pytorch_unmerged": "the same vs PyTorch fp32 eager with the PEFT adapter as trained (unmerged)",
    "decode_vs_llamacpp": "int4 package decode, base, as shipped, vs llama.cpp on the Q4_1 GGUF of the same SmolLM2, "
    "all the CPUs",
    "decode_vs_llamacpp_all_cpus": "the same with the package set to all the CPUs",
    "bandwidth_fraction": "base package decode against the memory-bandwidth bound (weight bytes a token reads over "
    "the measured copy bandwidth)",
    "base_size_vs_gguf": "the quickstart's base model file vs the Q4_1 GGUF it is made from",
    "adapter_r16_slowdown": "decode slowdown with an r=16 adapter active, the shipped quickstart package's larger of two",
    "adapter_r16_slowdown_4_adapter_package": "the same in a four-adapter bench package (r = 8, 16, 16, 64)",
    "adapter_r16_slowdown_vs_unswitched_base": "`adapter_r16_slowdown`'s adapter against the base of the same "
    "package without the adapter switch (every LoRA node run on its zero defaults, as before the switch)",
    "adapter_switch_base_speedup": "base decode as shipped vs the base of the same package without the adapter switch",
    "adapter_switch_ms": "switching adapters (new generator + set_active_adapter)",
    "package_4_adapters_vs_base": "package with 4 adapters (r = 8, 16, 16, 64, int8 weights) vs its base model file",
    "package_4_adapters_vs_weights_read": "the same vs the weights a token reads (the base model less any float "
    "embedding table, of which a token reads one row)",
    "train_vs_peft": "training tokens/s vs a peft + Trainer script learning the same answer tokens",
    "train_vs_peft_every_token": "the same vs the simplest peft + Trainer script, learning every token",
    "train_vs_peft_bf16": "the same vs the answer-token script with bf16=True (transformers' bf16 mixed precision)",
    "unchanged_rerun_s": "unchanged re-run of the quickstart",
    "serve_single_vs_direct": (
        "`olive-flows serve`: one streamed request vs the same package decoded in-process, taking turns"
    ),
    "serve_8_clients_vs_single": "`serve --workers 2 --parallel 1`: 8 concurrent clients vs 1 (aggregate tokens/s)",
    "serve_vs_llamacpp_server": "the same, 4 clients on the base vs llama-cpp-python's server on the GGUF",
    "eval_share": "evaluation's share of the fresh-clone quickstart's `make finetune` (bench/quickstart.py)",
}
# Each ratio and its target; None: measured beside a target's ratio, with no target of its own.
# The targets of the second round (decode, adapters, training, size, evaluation) replace the first's.
TARGETS: dict[str, tuple[str, float] | None] = {
    "decode_vs_pytorch": (">=", 5.0),
    "decode_vs_pytorch_unmerged": None,
    "decode_vs_llamacpp": (">=", 1.25),
    "decode_vs_llamacpp_all_cpus": None,
    "bandwidth_fraction": (">=", 0.55),
    "base_size_vs_gguf": ("<=", 1.15),
    "adapter_r16_slowdown": ("<=", 0.10),
    "adapter_r16_slowdown_4_adapter_package": None,
    "adapter_r16_slowdown_vs_unswitched_base": None,
    "adapter_switch_base_speedup": None,
    "adapter_switch_ms": ("<=", 50.0),
    "package_4_adapters_vs_base": ("<=", 1.1),
    "package_4_adapters_vs_weights_read": None,
    "train_vs_peft": (">=", 1.4),
    "train_vs_peft_every_token": None,
    "train_vs_peft_bf16": None,
    "unchanged_rerun_s": ("<=", 15.0),
    "serve_single_vs_direct": (">=", 0.9),
    "serve_8_clients_vs_single": (">=", 1.5),
    "serve_vs_llamacpp_server": (">=", 1.0),
    "eval_share": ("<=", 0.2),
}


def quickstart_results() -> dict[str, Any]:
    """bench/quickstart.py's last run (a fresh clone, timed by a script of its own) as results.json
    holds it; nothing when it has not run."""
    path = BENCH / "quickstart.json"
    if not path.is_file():
        return {}
    q = json.loads(path.read_text(encoding="utf-8"))
    return {
        "quickstart": {
            "commit": q["commit"],
            "eval_share": q["eval_share"],
            "finetune_s": q["finetune_s"],
            "evaluate_s": sum(s for stage, s in q["stages_s"].items() if stage.startswith("evaluate")),
        }
    }


def olive_flows(*args: str) -> float:
    """Wall time of one `olive-flows` command in a fresh process (startup included, as a user sees it)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "olive_flows", *args], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def olive_run_compiled(workspace: Workspace) -> float:
    """Wall time of `olive run` on each of the quickstart's compiled configs, one process each, with
    Olive's cache as olive-flows left it: the same work as an unchanged re-run, done by Olive's CLI."""
    compiled = workspace.compiled
    started = time.perf_counter()
    for config in sorted((compiled / "cpu").glob("*.json")):
        command = [
            str(Path(sys.executable).parent / "olive"),
            "run",
            "--config",
            str(config),
            "--package-config",
            str(compiled / PACKAGE_CONFIG_FILE),
        ]
        env = {**os.environ, "OLIVE_DISABLE_TELEMETRY": "1"}
        subprocess.run(command, cwd=REPO, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


# The widest vector unit the CPU has, first match: onnxruntime's int8 and int4 kernels differ by it, and
# one cloud CPU name hides very different machines (a 2-core "AMD EPYC" here copied memory at 41 GB/s
# on one day and at 16 GB/s, with AVX2 only, on another).
VECTOR_UNITS = [("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"), ("avx_vnni", "AVX-VNNI"), ("avx2", "AVX2")]


def machine() -> dict[str, Any]:
    lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    cpu += next((f" ({name})" for flag, name in VECTOR_UNITS if flag in flags), "")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory, 1), "python": platform.python_version()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decode-rounds", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=12)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite RESULTS.md from results.json, taking bench/quickstart.json's last run into both",
    )
    args = parser.parse_args()
    if args.report_only:
        results = json.loads((BENCH / "results.json").read_text(encoding="utf-8"))
        results.update(quickstart_results())
        results["ratios"] = ratios(results)
        (BENCH / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        (BENCH / "RESULTS.md").write_text(report(results))
        return 0
    say = lambda text: print(f"[bench] {text}", file=sys.stderr, flush=True)  # noqa: E731

    started = time.perf_counter()
    settings = {**vars(args), "threads": THREADS}
    results: dict[str, Any] = {"machine": machine(), "versions": versions(), "settings": settings}
    say("quickstart package (built once with `olive-flows run quickstart`, then reused)")
    olive_flows("run", "quickstart")
    from olive_flows.plugins.train_pass import bf16_natively
    from olive_flows.validate.load import load_recipe

    workspace = Workspace.of(load_recipe("quickstart"))
    package = workspace.package("cpu")
    manifest = json.loads((package / "manifest.json").read_text(encoding="utf-8"))

    say("decode: the package as shipped (base, adapters), on all the CPUs, and llama.cpp taking turns; PyTorch")
    runtime = PackageRuntime(package)
    engines = decode.package_engines(runtime, PROMPT, [None, *runtime.adapter_names], args.tokens)
    all_cpus = decode.package_engines(PackageRuntime(package, threads=THREADS), PROMPT, [None], args.tokens)["base"]
    with tempfile.TemporaryDirectory() as tmp:
        unswitched = decode.package_engines(
            PackageRuntime(decode.unswitched_copy(package, Path(tmp))), PROMPT, [None], args.tokens
        )["base"]
        gguf = _gguf()
        llama = decode.llamacpp_engine(gguf, PROMPT, args.tokens, THREADS)
        speeds = decode.round_robin(
            {**engines, ALL_CPUS: all_cpus, UNSWITCHED: unswitched, **({LLAMACPP: llama} if llama else {})},
            args.decode_rounds,
        )
    results["decode"] = {
        "package_int4": {name: speeds[name] for name in engines},
        "package_int4_all_cpus": speeds[ALL_CPUS],
        "package_int4_unswitched": speeds[UNSWITCHED],
        "adapter_ranks": {name: manifest["adapters"][name]["r"] for name in runtime.adapter_names},
        "pytorch": decode.pytorch_speeds(
            manifest["base_model"]["path"], workspace.peft(PYTORCH_ADAPTER), PROMPT, args.tokens, args.repeats, THREADS
        ),
        "llamacpp": {**speeds[LLAMACPP], "weights": gguf.name}
        if llama
        else {"skipped": "llama-cpp-python is not installed (pip install -e '.[bench]')"},
    }
    bandwidth = decode.copy_bandwidth_gb_s()
    with tempfile.TemporaryDirectory() as tmp:
        graph = decode.runtime_graph(package / "model.onnx", Path(tmp))
    per_token = decode.weight_bytes_per_token(graph)
    bound = bandwidth * 1e9 / per_token
    results["bandwidth"] = {
        "copy_gb_s": round(bandwidth, 2),
        "weight_mb_per_token": round(per_token / 1e6, 1),
        "llamacpp_weight_mb_per_token": round(decode.gguf_bytes_per_token(gguf) / 1e6, 1),
        "bound_tokens_per_s": round(bound, 1),
        "fraction_reached": round(results["decode"]["package_int4"]["base"]["tokens_per_s"] / bound, 3),
        "graph_nodes": len(decode.branch_nodes(graph.graph, "else_branch")),  # the base's kernel launches per token
    }
    results["sizes"] = {
        "base_model_mb": round(package_bytes(package)[0] / 1e6, 1),
        "gguf_mb": round(gguf.stat().st_size / 1e6, 1),
    }
    results.update(quickstart_results())

    results["serve"] = serving.serve_figures(
        package, runtime.adapter_names, gguf, PROMPT, args.tokens, args.repeats, say, engines["base"]
    )

    with tempfile.TemporaryDirectory() as tmp:
        say("adapters: a four-adapter package at r = 8, 16, 16, 64, with int8 and with float LoRA weights")
        results["adapters"] = adapters.adapter_costs(
            adapters.build_packages(Path(tmp)), PROMPT, args.tokens, args.decode_rounds, THREADS
        )
        say("training: olive-flows against a plain peft + Trainer script")
        runs = training.side_by_side(
            manifest["base_model"]["path"], args.train_steps, TRAIN_REPEATS, Path(tmp), say, bf16_natively()
        )
        adapter, stats = runs["adapter"], runs["stats"]
        rows = args.train_steps * adapter["training"]["batch_size"]
        row_tokens = {"olive_flows": stats["tokens"] / stats["examples"]}
        row_tokens |= {side: runs["peft_mean_tokens"] for side in runs["seconds"] if side != "olive_flows"}
        results["training"] = {
            "steps": args.train_steps,
            "rows": rows,
            "tokens_per_s": {
                side: round(rows * row_tokens[side] / statistics.median(seconds), 1)
                for side, seconds in runs["seconds"].items()
            },
            "learned_share": round(stats["learned_tokens"] / stats["tokens"], 3),
            "bf16_natively": bf16_natively(),
            "train_runtime_s": runs["seconds"],
        }

    say("training: olive-flows' data handling against Olive's default padding")
    results["padding"] = train_padding.padding_figures(args.train_steps, TRAIN_REPEATS, say)
    results["data_parallel"] = data_parallel.data_parallel_figures([1, 2], 24, say)

    say("engine: validate, compile, unchanged re-run")
    results["engine"] = {
        "validate_s": {n: round(olive_flows("validate", n), 2) for n in builtin_recipes()},
        "compile_s": {
            n: round(olive_flows("compile", n, f"output.dir={tempfile.mkdtemp()}"), 2) for n in builtin_recipes()
        },
        "unchanged_rerun_s": round(statistics.median(olive_flows("run", "quickstart") for _ in range(3)), 2),
        "olive_run_compiled_s": round(statistics.median(olive_run_compiled(workspace) for _ in range(3)), 2),
    }

    results["wall_s"] = round(time.perf_counter() - started)
    results["ratios"] = ratios(results)
    (BENCH / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (BENCH / "RESULTS.md").write_text(report(results), encoding="utf-8")
    print((BENCH / "RESULTS.md").read_text(encoding="utf-8"))
    return 0


def _gguf() -> Path:
    """The GGUF file the built-in model is made from: the same SmolLM2 weights llama.cpp runs."""
    from olive_flows.models.builtin import gguf_file

    return gguf_file("smollm2-135m-instruct")


# What a merged PyTorch set-up gives up to decode faster than the model as trained (fp32).
PYTORCH_SHORTCUTS = {
    "dynamic int8, merged": (
        "which quantizes as well (torch.ao's dynamic int8: 8-bit weights, twice the package's 4 bits, and "
        "activations quantized per token); "
    ),
    "bf16, merged": "which halves the weights' bytes as well (16 bits a weight, four times the package's 4); ",
}

WHY_MISSED = {
    "decode_vs_pytorch": lambda r: (
        f"the fastest PyTorch set-up here is {fastest_pytorch(r)}, {PYTORCH_SHORTCUTS.get(fastest_pytorch(r), '')}"
        "against the model as trained, merged in fp32, the package is "
        f"{r['decode']['package_int4'][PYTORCH_ADAPTER]['tokens_per_s'] / r['decode']['pytorch']['fp32, merged']['tokens_per_s']:.2f}x. "
        "The 5x target was set against PyTorch with the PEFT adapter unmerged (`decode_vs_pytorch_unmerged`)."
    ),
    "decode_vs_llamacpp": lambda r: (
        "both decode the same Q4_1 weights and both are "
        f"bound by memory traffic: the package reads {r['bandwidth']['weight_mb_per_token']} MB of weights per "
        f"token, llama.cpp {r['bandwidth']['llamacpp_weight_mb_per_token']} MB. MatMulNBits takes its block "
        "scales in the activations' type, so on this fp32 graph each block of 32 weights carries an fp32 step "
        "and an fp32 minimum in memory (the file holds fp16 ones, as the GGUF does; onnxruntime casts them at "
        "load), and the minima go through a separate offsets MatMul and Add per "
        "projection: onnxruntime's fast kernel already adds a float per-block term, but fills it only from "
        "integer zero points (a float zero point takes a dequantize-then-multiply path, about 28x slower on a "
        "576x1536 weight). targets.<name>.int4.algorithm: k_quant_mixed (the schema default) decodes faster "
        "but rounds these weights a second time (bench/parity_bounds.json, k_quant_mixed: the base's loss per "
        "token and KL divergence against PyTorch)."
    ),
    "bandwidth_fraction": lambda r: (
        f"a token of the base reads {r['bandwidth']['weight_mb_per_token']} MB through "
        f"{r['bandwidth']['graph_nodes']} nodes (the LoRA nodes run only with an adapter active, "
        f"`adapter_switch_base_speedup` {r['ratios']['adapter_switch_base_speedup']}x): on a 135M model the many "
        "small nodes per layer (norms, rotary embedding, attention, the Q4_1 offsets MatMul and Add) cost as much "
        "as the weight traffic (onnxruntime's profile of the base: MatMulNBits about half of the kernel time)."
    ),
    "base_size_vs_gguf": lambda r: (
        f"{r['sizes']['base_model_mb']} MB against {r['sizes']['gguf_mb']} MB. The embedding has no table of its "
        "own (it reads the 8-bit LM head's blocks, as the GGUF's tied Q8_0 table serves both) and the Q4_1 blocks' "
        "steps and minima and the LM head's Q8_0 steps are stored in fp16 like the GGUF's; what is left is the "
        "Q4_1 pass's block-sum columns, the norms and the rotary embedding's cos/sin tables."
    ),
    "eval_share": lambda r: (
        f"measured on {r['quickstart']['commit'][:7]}: evaluation took {r['quickstart']['evaluate_s']} s of "
        f"{r['quickstart']['finetune_s']} s (round 1: 2 to 3 minutes; 73 s on 97c0555, before answers were read "
        "off the scoring pass and shared prefixes scored once; bf16 mixed precision has made the training before "
        "it faster, which raises its share). Answers are read off the scoring pass or cut where their scores are "
        "settled, so the untuned base is hardly generated at all; what is left is compute-bound on these cores: "
        "the PyTorch side (fp32 with the PEFT adapter: the parity reference, which bf16 would blur), the package's "
        "prefill of what each row does not share with the one before, and the decode-speed runs (three per "
        "adapter and the base)."
    ),
    "adapter_r16_slowdown": lambda r: (
        "the base got faster and the adapter did not: the base no longer runs the LoRA nodes (the adapter switch, "
        f"`adapter_switch_base_speedup` {r['ratios']['adapter_switch_base_speedup']}x), and against the base as it "
        "ran before, on every LoRA node's zero defaults, the same adapter costs "
        f"{r['ratios']['adapter_r16_slowdown_vs_unswitched_base']:.1%} (`adapter_r16_slowdown_vs_unswitched_base`). "
        "What an active adapter runs: the LoRA weights are graph inputs (the adapter file overrides them), so "
        "onnxruntime cannot fold them into the int4 base, and each layer runs 6 small int8 DynamicQuantizeMatMuls "
        "(q, k and v share one A input since their LoRAs are fused), a Split and a Concat beside it at every "
        "token, each a separate kernel launch (their outputs join the projections in the Sums that add the Q4_1 "
        "offsets). With float weights the same r=16 adapter costs "
        f"{_storage(r, 'float')['slowdown']['r16']:.1%}, at four times the file size; a larger rank costs more."
    ),
    "adapter_switch_ms": lambda r: (
        f"switching includes creating a generator; {r['adapters']['switch_seeded_ms']} ms with random_seed set."
    ),
    "package_4_adapters_vs_base": lambda r: (
        f"{r['ratios']['package_4_adapters_vs_base'] - 1.1:.3f} over. The four adapters here include one at r=64 "
        f"({_storage(r)['adapter_mb'].get('r64')} MB, {adapters.STORAGES[0]} weights) against a {_storage(r)['base_model_mb']} MB "
        f"base; with float weights the package is {_storage(r, 'float')['package_4_adapters_vs_base']}x. A base "
        "model that keeps a float embedding table in its file makes this ratio smaller without making the "
        "adapters any smaller: `package_4_adapters_vs_weights_read` is the one to compare."
    ),
    "train_vs_peft": lambda r: (
        f"over {r['training']['steps']} steps both run the same transformers Trainer on the same rows; "
        "olive-flows skips the LM head where no label is and trains in bf16 where the CPU computes it natively "
        f"({'as this one does' if r['training'].get('bf16_natively') else 'this one does not: both train in fp32 here'}), "
        "and padding-free packing (training.packing) has little to save on these rows of about the same "
        f"length ({r['padding']['ratio_packed_vs_padded']}x the padded batches; "
        f"{r['padding']['ratio_packed_vs_padded_multi_turn']}x on multi-turn rows of varied length). What is "
        "left is the same matrix products on both sides: the base model's forward and the backward to its "
        "inputs, which torch's fp32 GEMM computes at the speed of this CPU."
    ),
    "unchanged_rerun_s": lambda r: (
        "process start-up, the data check and hashing the model and the package add up (Olive is not started)."
    ),
    "serve_single_vs_direct": lambda r: "HTTP, JSON and server-sent events per token; see the serving table.",
    "serve_8_clients_vs_single": lambda r: (
        "onnxruntime-genai holds Python's GIL while it computes a token, so only processes add cores; "
        "see the serving table."
    ),
    "serve_vs_llamacpp_server": lambda r: "see the serving table.",
}


def _storage(r: dict[str, Any], adapter_weights: str = adapters.STORAGES[0]) -> dict[str, Any]:
    """The adapter figures of the four-adapter package that stores its LoRA weights as ``adapter_weights``."""
    return r["adapters"]["adapter_weights"][adapter_weights]


def met(name: str, value: float | None) -> bool:
    """Whether ``value`` of the ratio ``name`` meets its target (TARGETS)."""
    relation, target = TARGETS[name] or ("", 0.0)
    return value is not None and (value >= target if relation == ">=" else value <= target)


def formatted(name: str, value: float | None) -> str:
    """A ratio as people read it: a share as a percentage, a time with its unit, else a factor."""
    if value is None:
        return "not measured"
    if "slowdown" in name:
        return f"{value:.1%}"
    for unit in ("ms", "s"):
        if name.endswith(f"_{unit}"):
            return f"{value} {unit}"
    return f"{value}x"


def shipped_slowdowns(r: dict[str, Any], base: float | None = None) -> dict[str, float]:
    """Each of the shipped quickstart package's adapters: how much slower it decodes than the base
    (or than ``base`` tokens/s)."""
    speeds = r["decode"]["package_int4"]
    base = base or speeds["base"]["tokens_per_s"]
    return {name: 1 - speeds[name]["tokens_per_s"] / base for name in r["decode"]["adapter_ranks"]}


def shipped_r16_slowdown(r: dict[str, Any], base: float | None = None) -> float:
    """The largest decode slowdown of the shipped quickstart package's r=16 adapters against its base
    (or against ``base`` tokens/s)."""
    ranks = r["decode"]["adapter_ranks"]
    return round(max(slowdown for name, slowdown in shipped_slowdowns(r, base).items() if ranks[name] == 16), 3)


def targets_table(r: dict[str, Any]) -> list[str]:
    """Every ratio, what it compares, its target and whether it was met (RESULTS.md's and the README's)."""
    lines = ["| ratio | what it compares | measured | target | met |", "|---|---|---|---|---|"]
    for name, goal in TARGETS.items():
        value = r["ratios"][name]
        target, done = ("", "")
        if goal:
            target, done = f"{goal[0]} {formatted(name, goal[1])}", "yes" if met(name, value) else "**no**"
        lines.append(f"| `{name}` | {LABELS[name]} | {formatted(name, value)} | {target} | {done} |")
    return lines


def fastest_pytorch(r: dict[str, Any]) -> str:
    """The PyTorch set-up with a merged adapter that decoded fastest: decode_vs_pytorch's baseline."""
    merged = [setup for setup in decode.PYTORCH_SETUPS if "unmerged" not in setup]
    return max(merged, key=lambda setup: r["decode"]["pytorch"][setup]["tokens_per_s"])


def ratios(r: dict[str, Any]) -> dict[str, float | None]:
    d = r["decode"]
    ours = d["package_int4"]["base"]["tokens_per_s"]
    llama = d["llamacpp"].get("tokens_per_s")
    pytorch, fastest = d["pytorch"], fastest_pytorch(r)
    adapter = d["package_int4"][PYTORCH_ADAPTER]["tokens_per_s"]
    trained = r["training"]["tokens_per_s"]
    return {
        "decode_vs_pytorch": round(adapter / pytorch[fastest]["tokens_per_s"], 2),
        "decode_vs_pytorch_unmerged": round(adapter / pytorch[decode.PYTORCH_SETUPS[0]]["tokens_per_s"], 2),
        "decode_vs_llamacpp": round(ours / llama, 2) if llama else None,
        "decode_vs_llamacpp_all_cpus": round(d["package_int4_all_cpus"]["tokens_per_s"] / llama, 2) if llama else None,
        "bandwidth_fraction": r["bandwidth"]["fraction_reached"],
        "base_size_vs_gguf": round(r["sizes"]["base_model_mb"] / r["sizes"]["gguf_mb"], 3),
        "adapter_r16_slowdown": shipped_r16_slowdown(r),
        "adapter_r16_slowdown_4_adapter_package": _storage(r)["slowdown"]["r16"],
        "adapter_r16_slowdown_vs_unswitched_base": shipped_r16_slowdown(
            r, d["package_int4_unswitched"]["tokens_per_s"]
        ),
        "adapter_switch_base_speedup": round(ours / d["package_int4_unswitched"]["tokens_per_s"], 3),
        "adapter_switch_ms": r["adapters"]["switch_ms"],
        "package_4_adapters_vs_base": _storage(r)["package_4_adapters_vs_base"],
        "package_4_adapters_vs_weights_read": _storage(r)["package_4_adapters_vs_weights_read"],
        "train_vs_peft": round(trained["olive_flows"] / trained["peft_answers"], 2),
        "train_vs_peft_every_token": round(trained["olive_flows"] / trained["peft_every_token"], 2),
        "train_vs_peft_bf16": (
            round(trained["olive_flows"] / trained["peft_answers_bf16"], 2) if "peft_answers_bf16" in trained else None
        ),
        "unchanged_rerun_s": r["engine"]["unchanged_rerun_s"],
        **serve_ratios(r),
        "eval_share": r.get("quickstart", {}).get("eval_share"),
    }


def serve_ratios(r: dict[str, Any]) -> dict[str, float | None]:
    """One streamed request against the same package in-process (both on the package's own threads);
    8 clients against 1 and 4 base-model clients against llama-cpp-python's server, with one
    server process per core (the set-up the README gives for throughput)."""
    default, per_core = (r["serve"]["configurations"][k] for k in ("default", "per_core"))
    llama = r["serve"]["llamacpp_server"].get("base_4_clients")
    load = {entry["clients"]: entry["aggregate_tokens_per_s"] for entry in per_core["load"]}
    direct = default["single"]["direct"]["tokens_per_s"]
    return {
        "serve_single_vs_direct": round(default["single"]["tokens_per_s"] / direct, 2),
        "serve_8_clients_vs_single": round(load[8] / load[1], 2),
        "serve_vs_llamacpp_server": round(
            per_core["base_4_clients"]["aggregate_tokens_per_s"] / llama["aggregate_tokens_per_s"], 2
        )
        if llama
        else None,
    }


def serve_report(r: dict[str, Any]) -> list[str]:
    """The serving section: every set-up's single-request speed and its load from 1 to 8 clients."""
    return [
        f"## Serving ({r['serve']['tokens']} tokens per streamed request, greedy, over HTTP on 127.0.0.1)",
        "",
        *serve_table(r),
        "",
        "Load columns: aggregate tokens/s of all clients over the wall time (median time to first token). Each "
        "client streams its requests one after another, the models (base and adapters) in turn. A server with "
        "several workers shares the physical cores out between them (`--threads` unset). The in-process decode of "
        "the same package on its own threads, taking turns with the default server's single requests: "
        f"{r['serve']['configurations']['default']['single']['direct']['tokens_per_s']} tokens/s.",
        "",
    ]


def serve_table(r: dict[str, Any]) -> list[str]:
    """The serving table (RESULTS.md's and the README's): each set-up, alone and under load."""
    v = r["serve"]
    lines = [
        "| server | 1 request: tokens/s | "
        + " | ".join(f"{c} clients" for c in serving.CLIENTS)
        + " | 4 clients, base |",
        "|---|---|" + "---|" * (len(serving.CLIENTS) + 1),
    ]
    for label, c in v["configurations"].items():
        lines.append(
            f"| olive-flows serve --workers {c['workers']} --parallel {c['parallel']} ({label}) | "
            f"{c['single']['tokens_per_s']} | "
            + " | ".join(f"{e['aggregate_tokens_per_s']} ({e['time_to_first_token_s']} s)" for e in c["load"])
            + f" | {c['base_4_clients']['aggregate_tokens_per_s']} ({c['base_4_clients']['time_to_first_token_s']} s) |"
        )
    llama = v["llamacpp_server"]
    if "single" in llama:
        blank = " | ".join("" for _ in serving.CLIENTS)
        lines.append(
            f"| llama-cpp-python server, {llama['threads']} threads | {llama['single']['tokens_per_s']} | {blank} | "
            f"{llama['base_4_clients']['aggregate_tokens_per_s']} ({llama['base_4_clients']['time_to_first_token_s']} s) |"
        )
    else:
        lines.append(f"| llama-cpp-python server | {llama['skipped']} |")
    return lines


def padding_report(r: dict[str, Any]) -> list[str]:
    """bench/train_padding.py's figure: olive-flows' data handling against Olive's default padding."""
    p = r["padding"]
    speeds = p["non_padding_tokens_per_s"]
    return [
        f"Padding (bench/train_padding.py): the same LoRA pass, rows, batch size {p['batch_size']} and max_seq_len "
        f"{p['max_seq_len']} ({p['mean_tokens_per_row']} tokens per row on average), {p['steps']} steps, median of "
        f"{p['repeats']} runs each: olive-flows' data handling (each batch padded to its longest row, answers "
        f"learned) {speeds['olive-flows']} non-padding tokens/s, Olive's own text-generation pre-processing (every "
        f"row padded to max_seq_len, every token learned) {speeds['olive-default']}: "
        f"{p['ratio_olive_flows_vs_olive_default']}x. With `training.packing: true` (each batch's rows in one "
        f"sequence, no padding) olive-flows trained {speeds['olive-flows packed']} "
        f"({p['ratio_packed_vs_padded']}x the padded batches): these rows are about as long as each other, so "
        "there is little padding to save. The same rows joined into conversations of one to four exchanges "
        f"({p['multi_turn_mean_tokens_per_row']} tokens per row on average, max_seq_len {p['multi_turn_max_seq_len']}): "
        f"padded {speeds['multi-turn']}, packed {speeds['multi-turn packed']} non-padding tokens/s "
        f"({p['ratio_packed_vs_padded_multi_turn']}x).",
        "",
    ]


def quickstart_report() -> list[str]:
    """The fresh-clone quickstart's time by stage, from bench/quickstart.json (bench/quickstart.py)."""
    path = BENCH / "quickstart.json"
    if not path.is_file():
        return []
    q = json.loads(path.read_text(encoding="utf-8"))
    return [
        "## The quickstart from a fresh clone",
        "",
        f"`make setup` then `make finetune` in a fresh clone of {q['commit'][:7]} with an empty model cache, measured "
        "by bench/quickstart.py (not part of `make bench`: it installs a new .venv), stages from the run's own "
        "timings.json:",
        "",
        "| stage | seconds |",
        "|---|---|",
        f"| make setup (new .venv from the package registry) | {q['setup_s']} |",
        f"| make finetune, in all | {q['finetune_s']} |",
        *(f"| &nbsp;&nbsp;{stage} | {seconds} |" for stage, seconds in q["stages_s"].items()),
        f"| &nbsp;&nbsp;process start, validation, data check | {q['outside_stages_s']} |",
        "",
        f"Evaluation is {q['eval_share']:.0%} of `make finetune` (`eval_share`).",
        "",
    ]


def data_parallel_report(r: dict[str, Any]) -> list[str]:
    """The data-parallel table (bench/data_parallel.py), when the results have it."""
    figures = r.get("data_parallel")
    if not figures:
        return []
    lines = [
        "## Training with several processes",
        "",
        f"`olive-flows run quickstart --processes N`, the {figures['adapter']} adapter, {figures['steps']} steps of "
        "the same per-process batch (N processes train N times the rows), on this machine "
        f"({r['machine']['cores']} cores: one process trains on torch's default threads, N processes share the "
        "cores, cores / N threads each), measured by bench/data_parallel.py.",
        "",
        "| processes | training tokens/s | vs 1 process | trainer runtime (s) |",
        "|---|---|---|---|",
    ]
    for count, run in figures["runs"].items():
        lines.append(f"| {count} | {run['tokens_per_s']} | {run['vs_one_process']} | {run['train_runtime_s']} |")
    return [*lines, ""]


def report(r: dict[str, Any]) -> str:
    m, d, a = r["machine"], r["decode"], r["adapters"]
    lines = [
        "# olive-flows benchmark",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}. "
        + ", ".join(f"{k} {v}" for k, v in r["versions"].items())
        + f". Medians of {r['settings']['repeats']} runs ({r['settings'].get('decode_rounds', r['settings']['repeats'])} "
        "rounds for the package and llama.cpp decode speeds); `make bench` reproduces every figure.",
        "",
        "## Targets",
        "",
        *targets_table(r),
    ]
    missed = [
        f"- `{name}` = {formatted(name, r['ratios'][name])}, target {goal[0]} {formatted(name, goal[1])}: "
        f"{WHY_MISSED[name](r)}"
        for name, goal in TARGETS.items()
        if goal and not met(name, r["ratios"][name])
    ]
    if missed:
        lines += ["", "Missed targets, by how much and what limits them:", "", *missed]
    lines += [
        "",
        f"## Decode ({r['settings']['tokens']} tokens after a chat prompt, greedy)",
        "",
        "| engine | tokens/s | time to first token (s) |",
        "|---|---|---|",
    ]
    for name, speed in d["package_int4"].items():
        lines.append(
            f"| olive-flows int4 package as shipped, {name} | {speed['tokens_per_s']} | "
            f"{speed['time_to_first_token_s']} |"
        )
    tuned = d["package_int4_all_cpus"]
    lines.append(
        f"| the same, base, intra_op_num_threads = all {r['settings']['threads']} CPUs | {tuned['tokens_per_s']} | "
        f"{tuned['time_to_first_token_s']} |"
    )
    unswitched = d["package_int4_unswitched"]
    lines.append(
        f"| the same, base, without the adapter switch (its LoRA nodes run on their zero defaults) | "
        f"{unswitched['tokens_per_s']} | {unswitched['time_to_first_token_s']} |"
    )
    for setup, speed in d["pytorch"].items():
        lines.append(
            f"| PyTorch eager, {setup} ({PYTORCH_ADAPTER}) | {speed['tokens_per_s']} | {speed['time_to_first_token_s']} |"
        )
    llama = d["llamacpp"]
    lines.append(
        f"| llama.cpp ({llama['weights']}) | {llama['tokens_per_s']} | {llama['time_to_first_token_s']} |"
        if "tokens_per_s" in llama
        else f"| llama.cpp | {llama['skipped']} | |"
    )
    b = r["bandwidth"]
    lines += [
        "",
        "The package as shipped runs on the threads its genai_config.json gives (olive-flows' CPU packages: "
        "`intra_op_num_threads: 0`, onnxruntime's one thread per physical core), as the README's Python snippet, "
        f"`olive-flows chat` and `serve` run it; the ratios against llama.cpp and PyTorch use it. llama.cpp "
        f"(n_threads), PyTorch (torch.set_num_threads) and the package tuned by hand run on all "
        f"{r['settings']['threads']} CPUs. The package's engines and llama.cpp take turns, one generation each "
        "per round after an untimed round; PyTorch runs after them, each set-up after a warm-up. "
        f"`decode_vs_pytorch` divides by the fastest merged PyTorch set-up; the adapter as trained (PEFT, "
        "unmerged) is `decode_vs_pytorch_unmerged`.",
        "",
        f"Memory-bandwidth bound: {b['weight_mb_per_token']} MB of weights per token over a measured copy bandwidth "
        f"of {b['copy_gb_s']} GB/s = {b['bound_tokens_per_s']} tokens/s; the base package reaches "
        f"{b['fraction_reached']:.0%} of it. llama.cpp reads {b['llamacpp_weight_mb_per_token']} MB of the GGUF per "
        "token"
        + (
            f", {llama['tokens_per_s'] * b['llamacpp_weight_mb_per_token'] / 1e3 / b['copy_gb_s']:.0%} of the same "
            "bandwidth at its speed."
            if "tokens_per_s" in llama
            else "."
        ),
        "",
        "## Adapters",
        "",
        "The shipped quickstart package's adapters (rank "
        + ", ".join(f"{name} r={rank}" for name, rank in d["adapter_ranks"].items())
        + ") against its base, as shipped: "
        + ", ".join(f"{name} {slowdown:.1%} slower" for name, slowdown in shipped_slowdowns(r).items())
        + " (`adapter_r16_slowdown` is the largest of the r=16 ones). A bench package with four adapters on the "
        "same base, built both ways a package can store LoRA weights, shows how the cost grows with rank:",
        "",
        "| | r=8 | r=16 | r=64 |",
        "|---|---|---|---|",
        *(
            row
            for storage in a["adapter_weights"]
            for row in (
                f"| decode slowdown, {storage} weights | "
                + " | ".join(f"{_storage(r, storage)['slowdown'][k]:.1%}" for k in ("r8", "r16", "r64"))
                + " |",
                f"| adapter file (MB), {storage} weights | "
                + " | ".join(str(_storage(r, storage)["adapter_mb"][k]) for k in ("r8", "r16", "r64"))
                + " |",
            )
        ),
        "",
        *(
            [
                "A negative slowdown means the adapter decoded faster than the base in this run: the cost is below "
                "this machine's run-to-run noise.",
                "",
            ]
            if any(v < 0 for s in a["adapter_weights"].values() for v in s["slowdown"].values())
            else []
        ),
        f"`adapter_weights: {adapters.STORAGES[0]}` (the quickstart's, and these ratios) against `float`, the two "
        "packages' engines taking turns: base decode "
        + ", ".join(
            f"{s['decode']['base']['tokens_per_s']} tokens/s ({storage})" for storage, s in a["adapter_weights"].items()
        )
        + "; r=16 "
        + ", ".join(
            f"{s['decode']['r16']['tokens_per_s']} tokens/s ({storage})" for storage, s in a["adapter_weights"].items()
        )
        + ".",
        f"Switching adapters (new generator + set_active_adapter): {a['switch_ms']} ms, {a['switch_seeded_ms']} ms "
        "with the search option random_seed set (without one, onnxruntime-genai seeds every new generator from 624 "
        "draws of std::random_device, the CPU's RDRAND instruction, slow on some virtual machines); reloading a "
        f"model of the base's size, as switching between merged models needs: {a['reload_merged_model_ms']} ms.",
        "A package with 4 adapters (r = 8, 16, 16, 64): "
        + "; ".join(
            f"{storage} weights {s['package_4_adapters_mb']} MB = {s['package_4_adapters_vs_base']}x the base model "
            f"({s['base_model_mb']} MB)"
            for storage, s in a["adapter_weights"].items()
        )
        + f"; 4 merged models: {a['four_merged_models_mb']} MB. Against the "
        f"{_storage(r)['weights_read_per_token_mb']} MB of weights a token reads (the base model less any float "
        "embedding table, of which a token reads one row), the four adapters add "
        + ", ".join(
            f"{s['package_4_adapters_vs_weights_read']}x ({storage} weights)"
            for storage, s in a["adapter_weights"].items()
        )
        + " (`package_4_adapters_vs_weights_read`).",
        "",
        *serve_report(r),
        "## Training",
        "",
        f"{r['training']['steps']} steps, {r['training']['rows']} rows of the quickstart's contacts adapter, "
        "non-padding tokens trained per second (medians of "
        f"{len(r['training']['train_runtime_s']['olive_flows'])} runs each, after an untimed warm-up, each side "
        "going first once: the first training in a process is the slowest):",
        "",
        "| trainer | learns | tokens/s | trainer runtimes (s) |",
        "|---|---|---|---|",
        *(
            f"| {TRAINERS[side][0]} | {TRAINERS[side][1]} | {r['training']['tokens_per_s'][side]} | "
            f"{', '.join(str(t) for t in r['training']['train_runtime_s'][side])} |"
            for side in TRAINERS
            if side in r["training"]["tokens_per_s"]
        ),
        "",
        f"The answer tokens are {r['training']['learned_share']:.0%} of the tokens here. olive-flows projects only "
        "the positions that predict them onto the vocabulary (olive_flows/plugins/train_pass.py); the plain "
        "scripts compute every logit. olive-flows trains in bf16 mixed precision where the CPU computes bf16 "
        "natively (training.mixed_precision: auto; this CPU: "
        f"{'yes' if r['training'].get('bf16_natively') else 'no'}); the plain scripts in fp32, Trainer's default, "
        "but for the one with bf16=True, which runs only where the CPU computes bf16 natively (elsewhere it "
        "emulates every bf16 operation and takes some 25 times as long). `train_vs_peft` is against the script "
        "with the same objective, `train_vs_peft_every_token` against the simplest one, `train_vs_peft_bf16` "
        "against the same objective in bf16.",
        "",
        *padding_report(r),
        *data_parallel_report(r),
        *quickstart_report(),
        "## Engine",
        "",
        f"Unchanged re-run of the quickstart: {r['engine']['unchanged_rerun_s']} s (a fresh process: startup, data "
        "check, the plan and package fingerprints; Olive is not started). `olive run` on the same two compiled configs, one "
        f"process each, every pass a cache hit: {r['engine']['olive_run_compiled_s']} s (Olive's CLI, telemetry off; "
        "it builds no package).",
        "",
        "| recipe | validate (s) | compile (s) |",
        "|---|---|---|",
    ]
    for name, seconds in r["engine"]["validate_s"].items():
        lines.append(f"| {name} | {seconds} | {r['engine']['compile_s'][name]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
