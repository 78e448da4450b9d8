"""Two ways to an int8 CPU base model, measured on the built-in SmolLM2-135M-Instruct.

olive-flows makes int8 the way onnxruntime-genai 0.14 forced it to (metadata/targets.json,
``precision_passes.int8``): ModelBuilder builds fp32, then Olive's OnnxBlockWiseRtnQuantization
quantizes the MatMuls, with the LM head kept float because Olive renames a quantized graph output.
onnxruntime-genai 0.18's builder can write int8 itself. This script builds both, plus variants of
the builder's int8 and the fp32 reference, and measures what a user would notice:

- size on disk (model.onnx and its external data);
- decode speed: greedy tokens/s over exactly --new-tokens tokens after one chat prompt, onnxruntime-genai
  at its default threads unless --threads is given, median of --repeats runs after one warm-up, the
  models taking turns so that a slow spell of a shared machine hits them all alike;
- quality against fp32 on the quickstart's held-out rows (the recipe's own eval split): mean NLL of
  the assistant tokens (as olive-flows' perplexity scores them), mean KL(fp32 || model) over those
  positions and how often the greedy (top-1) token agrees with fp32's.

It also records what each graph does with the LM head and the embedding (op type, weight dtype).

    .venv/bin/python bench/int8_paths.py [--rows 40] [--new-tokens 128] [--repeats 3] [--keep DIR]

Writes bench/int8_paths.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from olive_flows import metadata
from olive_flows.data.prepare import clean_rows, read_dataset, split_rows
from olive_flows.data.tokenize import Encoded, encode_chat
from olive_flows.evaluate.perplexity import PackageScorer, scored_positions, token_nll
from olive_flows.evaluate.runtime import PackageRuntime
from olive_flows.evaluate.speed import decode_speed
from olive_flows.files import write_json
from olive_flows.models.builtin import materialize
from olive_flows.plugins.model_builder_pass import builder_options
from olive_flows.validate.load import load_recipe

BENCH = Path(__file__).parent
RESULTS = BENCH / "int8_paths.json"
MODEL = "smollm2-135m-instruct"
RECIPE = "quickstart"  # its datasets' eval split are the rows scored
PROMPT = [{"role": "user", "content": "Write a short paragraph about the history of the bicycle."}]  # bench/run.py's
MAX_SEQ_LEN = 512  # no quickstart row comes near it: nothing is truncated
LM_HEAD, EMBEDDING = "/lm_head/MatMul", "/model/embed_tokens/"
REFERENCE = "fp32"


@dataclass
class Variant:
    """One way to the model: a builder precision and options, then optionally Olive's quantization pass."""

    name: str
    path: str  # the brief's letter: a (today's olive-flows), b (the builder's int8), c (fp32 reference)
    how: str
    precision: str
    options: dict[str, Any] = field(default_factory=dict)
    olive_pass: dict[str, Any] | None = None  # OnnxBlockWiseRtnQuantization config, run on the build


def variants() -> list[Variant]:
    """fp32; today's olive-flows int8 (fp32 build + Olive RTN, settings from metadata/targets.json);
    the builder's int8 as olive-flows would call it (shared_embeddings=false, the builder's defaults:
    symmetric, LM head quantized), with the tie the builder picks itself (shared_embeddings follows
    tie_word_embeddings), with today's settings but the LM head quantized, and with exactly today's
    quantization settings (asymmetric, LM head float) so that only the tool differs."""
    chain = metadata.load("targets")["precision_passes"]["int8"]
    quantize = {k: v for k, v in chain["quantize"].items() if k != "type"}
    olive_pass = {**quantize, "nodes_to_exclude": list(chain["keep_float"])}
    same_settings = {
        "block_size": quantize["block_size"],
        "is_symmetric": quantize["is_symmetric"],
        "accuracy_level": quantize["accuracy_level"],
        "nodes_to_exclude": list(chain["keep_float"]),
    }
    return [
        Variant(REFERENCE, "c", "builder fp32", "fp32"),
        Variant("olive-rtn", "a", "builder fp32 + Olive OnnxBlockWiseRtnQuantization", "fp32", olive_pass=olive_pass),
        Variant("builder-int8", "b", "builder int8, olive-flows' options (shared_embeddings=false)", "int8"),
        Variant(
            "builder-int8-tied",
            "b",
            "builder int8, shared_embeddings=true (the builder's own choice for a tied model)",
            "int8",
            {"shared_embeddings": True},
        ),
        Variant(
            "builder-int8-asym",
            "b",
            "builder int8 with today's settings but the LM head quantized too",
            "int8",
            {k: v for k, v in same_settings.items() if k != "nodes_to_exclude"},
        ),
        Variant(
            "builder-int8-lmfloat",
            "b",
            "builder int8 with today's settings: asymmetric, LM head excluded",
            "int8",
            same_settings,
        ),
    ]


@contextlib.contextmanager
def quiet(log: Path) -> Iterator[None]:
    """Send the builder's and Olive's chatter (Python and native) to ``log``; it is shown on failure."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a", encoding="utf-8") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                yield
        except BaseException:
            sys.stdout.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            print(log.read_text(encoding="utf-8")[-4000:], file=sys.stderr)
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def build(variant: Variant, source: str, work: Path) -> Path:
    """The model folder of ``variant`` under ``work``: ModelBuilder as olive-flows calls it (options
    through ``builder_options``), then Olive's pass where the variant has one."""
    import onnxruntime_genai as og
    from onnxruntime_genai.models import builder

    built = work / (f"{variant.name}-build" if variant.olive_pass else variant.name)
    cache = str(work / "cache")
    with quiet(work / f"{variant.name}.log"):
        options = builder.parse_extra_options(
            source,
            source,
            str(built),
            variant.precision,
            "cpu",
            cache,
            builder_options(variant.options, og.__version__),
        )
        builder.create_model(source, source, str(built), variant.precision, "cpu", cache, **options)
        if not variant.olive_pass:
            return built
        return olive_quantize(built, work / variant.name, variant.olive_pass)


def olive_quantize(built: Path, out: Path, config: dict[str, Any]) -> Path:
    """Olive 0.13's OnnxBlockWiseRtnQuantization run on ``built``'s model.onnx, as the int8 workflow
    runs it (the pass itself, outside a workflow); the builder's other files are copied beside it."""
    from olive.model import ONNXModelHandler
    from olive.passes.olive_pass import create_pass_from_dict
    from olive.passes.onnx.rtn_quantization import OnnxBlockWiseRtnQuantization

    out.mkdir(parents=True)
    for item in built.iterdir():
        if not item.name.startswith("model.onnx"):
            shutil.copy2(item, out / item.name)
    quantizer = create_pass_from_dict(OnnxBlockWiseRtnQuantization, config, disable_search=True)
    quantizer.run(ONNXModelHandler(model_path=str(built / "model.onnx")), str(out / "model.onnx"))
    shutil.rmtree(built)
    return out


def size_mb(folder: Path) -> float:
    """Megabytes (10^6) of the folder's .onnx and .onnx.data files."""
    files = [f for f in folder.iterdir() if f.name.endswith((".onnx", ".onnx.data"))]
    return round(sum(f.stat().st_size for f in files) / 1e6, 1)


def graph_facts(folder: Path) -> dict[str, Any]:
    """Op type, weight dtype and quantization attributes of the LM head and embedding nodes, and how
    many of the decoder layers' MatMuls are MatMulNBits (with zero points: asymmetric)."""
    import onnx

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    dtypes = {t.name: onnx.TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer}
    interesting = {"bits", "block_size", "accuracy_level", "quantize_axis", "gather_axis"}
    facts: dict[str, Any] = {"lm_head": [], "embedding": []}
    for node in model.graph.node:
        part = (
            "lm_head" if node.name.startswith("/lm_head/") else "embedding" if node.name.startswith(EMBEDDING) else ""
        )
        if not part or node.op_type in ("Unsqueeze", "Shape", "Slice", "Reshape"):
            continue
        weights = {name: dtypes[name] for name in node.input if name in dtypes}
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute if a.name in interesting}
        facts[part].append({"node": node.name, "op": node.op_type, "initializers": weights, **attributes})
    body = [
        n for n in model.graph.node if n.op_type in ("MatMul", "MatMulNBits") and not n.name.startswith("/lm_head/")
    ]
    facts["body"] = {
        "MatMul": sum(n.op_type == "MatMul" for n in body),
        "MatMulNBits": sum(n.op_type == "MatMulNBits" for n in body),
        "with_zero_points": sum(n.op_type == "MatMulNBits" and len(n.input) > 3 and bool(n.input[3]) for n in body),
    }
    return facts


def describe(facts: list[dict[str, Any]]) -> str:
    """A short 'Op(dtypes)' form of graph_facts' entries for the table."""
    return "; ".join(f"{f['op']}({','.join(sorted(set(f['initializers'].values())))})" for f in facts) or "-"


def layers(body: dict[str, int]) -> str:
    """The decoder layers' MatMuls for the table: float, or n-bit symmetric / asymmetric."""
    if not body["MatMulNBits"]:
        return f"{body['MatMul']} MatMul"
    kind = "asym" if body["with_zero_points"] else "sym"
    return f"{body['MatMulNBits']} NBits {kind}" + (f" + {body['MatMul']} MatMul" if body["MatMul"] else "")


def eval_rows(limit: int) -> list[dict[str, Any]]:
    """The quickstart recipe's held-out (eval split) rows, split as olive-flows splits them, taken
    from each dataset in turn up to ``limit`` rows in all."""
    recipe = load_recipe(RECIPE)
    per_dataset = []
    for name, spec in recipe.datasets.items():
        rows = clean_rows(read_dataset(recipe, name)[0], spec["clean"])[0]
        per_dataset.append(split_rows(rows, (spec["eval_split"], spec["test_split"]), spec["seed"])[1])
    share = -(-limit // len(per_dataset))
    return [row for rows in per_dataset for row in rows[:share]][:limit]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def quality(runtimes: dict[str, PackageRuntime], examples: list[Encoded]) -> dict[str, dict[str, float]]:
    """Mean NLL per scored token for each model; mean KL(fp32 || model) and top-1 agreement with fp32."""
    totals = {name: {"nll": 0.0, "kl": 0.0, "agree": 0} for name in runtimes}
    tokens = 0
    capacity = max(len(example.input_ids) for example in examples) + 1
    scorers = {name: PackageScorer(runtime, None, capacity) for name, runtime in runtimes.items()}
    for example in examples:
        tokens += len(scored_positions(example))
        reference = None
        for name, scorer in scorers.items():  # fp32 first: variants() lists it first
            logits = np.asarray(scorer.logits(example), dtype=np.float32)
            totals[name]["nll"] += token_nll(logits, example).total
            logp = log_softmax(logits)
            if reference is None:
                reference = logp
            totals[name]["kl"] += float((np.exp(reference) * (reference - logp)).sum())
            totals[name]["agree"] += int((reference.argmax(-1) == logp.argmax(-1)).sum())
    return {
        name: {
            "nll": round(t["nll"] / tokens, 5),
            "kl_vs_fp32": round(t["kl"] / tokens, 6),
            "top1_agreement": round(t["agree"] / tokens, 4),
            "scored_tokens": tokens,
        }
        for name, t in totals.items()
    }


def speed(runtimes: dict[str, PackageRuntime], new_tokens: int, repeats: int) -> dict[str, dict]:
    """Median decode figures per model over ``repeats`` rounds, after one untimed round; the models
    take turns within each round (one run of evaluate/speed.py's decode_speed each)."""
    for runtime in runtimes.values():
        decode_speed(runtime, PROMPT, None, new_tokens, repeats=1)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in runtimes}
    for _ in range(repeats):
        for name, runtime in runtimes.items():
            runs[name].append(decode_speed(runtime, PROMPT, None, new_tokens, repeats=1))
    return {
        name: {
            "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in done), 1),
            "tokens_per_s_runs": [r["tokens_per_s"] for r in done],
            "time_to_first_token_ms": round(statistics.median(r["time_to_first_token_s"] for r in done) * 1e3, 1),
        }
        for name, done in runs.items()
    }


def table(results: dict[str, dict[str, Any]]) -> str:
    """The results as a fixed-width text table."""
    columns: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("path", lambda r: r["path"]),
        ("variant", lambda r: r["name"]),
        ("MB", lambda r: f"{r['size_mb']:.1f}"),
        ("tok/s", lambda r: f"{r['tokens_per_s']:.1f}"),
        ("TTFT ms", lambda r: f"{r['time_to_first_token_ms']:.1f}"),
        ("NLL", lambda r: f"{r['nll']:.4f}"),
        ("dNLL", lambda r: f"{r['nll_delta_vs_fp32']:+.4f}"),
        ("KL", lambda r: f"{r['kl_vs_fp32']:.5f}"),
        ("top-1", lambda r: f"{r['top1_agreement']:.2%}"),
        ("layers", lambda r: layers(r["graph"]["body"])),
        ("LM head", lambda r: describe(r["graph"]["lm_head"])),
        ("embedding", lambda r: describe(r["graph"]["embedding"])),
    ]
    cells = [[head for head, _ in columns]] + [[cell(r) for _, cell in columns] for r in results.values()]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def versions() -> dict[str, str]:
    import olive
    import onnxruntime
    import onnxruntime_genai
    import transformers

    return {
        "onnxruntime-genai": onnxruntime_genai.__version__,
        "onnxruntime": onnxruntime.__version__,
        "olive-ai": olive.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=40, help="held-out rows scored, split over the datasets")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: onnxruntime-genai's)")
    parser.add_argument("--keep", type=Path, default=None, help="build into this folder and keep the models")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    source = str(materialize(MODEL))
    tokenizer = AutoTokenizer.from_pretrained(source)
    examples = [encode_chat(tokenizer, row["messages"], MAX_SEQ_LEN) for row in eval_rows(args.rows)]
    prompt = list(tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True, return_dict=False))

    with contextlib.ExitStack() as stack:
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            args.keep.mkdir(parents=True)
            work = args.keep
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="int8-paths-")))
        results: dict[str, dict[str, Any]] = {}
        runtimes: dict[str, PackageRuntime] = {}
        for variant in variants():
            started = time.perf_counter()
            folder = build(variant, source, work)
            seconds = round(time.perf_counter() - started, 1)
            print(f"built {variant.name} in {seconds} s: {size_mb(folder)} MB", flush=True)
            results[variant.name] = {
                "name": variant.name,
                "path": variant.path,
                "how": variant.how,
                "builder_precision": variant.precision,
                "builder_options": builder_options(variant.options, _genai_version()),
                "olive_pass": variant.olive_pass,
                "build_s": seconds,
                "size_mb": size_mb(folder),
                "graph": graph_facts(folder),
            }
            runtimes[variant.name] = PackageRuntime(folder, threads=args.threads)
        print(f"scoring {len(examples)} held-out rows", flush=True)
        scores = quality(runtimes, examples)
        print(f"decoding {args.new_tokens} tokens x {args.repeats} (+1 warm-up) per model", flush=True)
        speeds = speed(runtimes, args.new_tokens, args.repeats)
        del runtimes
    for name, result in results.items():
        result.update(scores[name], **speeds[name])
        result["nll_delta_vs_fp32"] = round(scores[name]["nll"] - scores[REFERENCE]["nll"], 5)
    report = {
        "model": f"builtin:{MODEL}",
        "rows": {
            "recipe": RECIPE,
            "split": "eval",
            "count": len(examples),
            "scored_tokens": scores[REFERENCE]["scored_tokens"],
        },
        "decode": {
            "prompt": PROMPT,
            "prompt_tokens": len(prompt),
            "new_tokens": args.new_tokens,
            "repeats": args.repeats,
        },
        "threads": args.threads or "onnxruntime-genai default",
        "cpus": os.cpu_count(),
        "versions": versions(),
        "results": results,
    }
    print()
    print(table(results))
    write_json(args.output, report)
    print(f"\nwrote {args.output}")
    return report


def _genai_version() -> str:
    import onnxruntime_genai

    return onnxruntime_genai.__version__


if __name__ == "__main__":
    main()
