"""Generate the README's measured figures from the committed outputs that measured them (``make docs``).

Every number the README gives about a run, a package, speed or size sits in a section generated here
from one of these files, which the README names beside it:

- bench/quickstart.json (``.venv/bin/python bench/quickstart.py``): the quickstart made in a fresh
  clone, its time by stage and its package's eval.json;
- bench/parity_bounds.json (``.venv/bin/python bench/parity_bounds.py``): parity of healthy and broken
  packages;
- bench/results.json (``make bench``): decode, adapters, serving, training and engine figures.

``python scripts/readme_figures.py`` rewrites the sections; ``--check`` fails when any is stale.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
README = REPO / "README.md"
sys.path[:0] = [str(REPO / "scripts"), str(BENCH)]

from run import formatted, serve_table, targets_table  # noqa: E402  bench/run.py: what each ratio compares
from schema_docs import replace_section  # noqa: E402

from olive_flows.console import Console  # noqa: E402
from olive_flows.evaluate.assess import show  # noqa: E402

Section = Callable[[dict[str, Any]], str]


def duration(seconds: float) -> str:
    """Seconds as people read them: ``7 min 56 s``, or ``42 s`` under a minute."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def machine(m: dict[str, Any]) -> str:
    return f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB"


def quickstart_output(q: dict[str, Any]) -> str:
    """What the run prints at the end of its evaluation: assess.show() of the fresh clone's eval.json."""
    console = io.StringIO()
    show(q["eval"], Console(console))
    return (
        "```\n[mm:ss] package cpu: evaluating on held-out rows (log: outputs/quickstart/_work/runs/<time>/logs/"
        f"eval-cpu.log)\n        ...\n{console.getvalue()}```\n"
    )


STAGES = {"prepare": "preparing", "package": "packaging", "evaluate": "evaluating"}  # timings.json's verbs


def _stage(name: str) -> str:
    """A timings.json stage in words: ``cpu/contacts`` is that adapter's Olive workflow."""
    if "/" in name:
        return f"training and exporting {name.partition('/')[2]}"
    verb, _, rest = name.partition(" ")
    return f"{STAGES.get(verb, verb)} {rest}"


def quickstart_time(q: dict[str, Any]) -> str:
    stages = q["stages_s"]
    return (
        f"(From `make setup` and then `make finetune` in a fresh clone of {q['commit'][:7]}, with an empty model "
        f"cache, on one machine ({machine(q['machine'])}) running nothing else: [`bench/quickstart.json`]"
        "(bench/quickstart.json), made by `.venv/bin/python bench/quickstart.py`. `make setup` took "
        f"{duration(q['setup_s'])} (a new .venv from the package registry), `make finetune` **"
        f"{duration(q['finetune_s'])}**: "
        + ", ".join(f"{_stage(name)} {duration(seconds)}" for name, seconds in stages.items())
        + f", and {duration(q['outside_stages_s'])} for starting, validating and checking the data. The run's own "
        "`[mm:ss]` stamps show each stage, and `_work/runs/<time>/timings.json` records them. With other work on "
        "the same cores it takes longer. CPU training is not bit-for-bit repeatable, so expect a few points of "
        "difference: the run's own output and `outputs/quickstart/cpu/eval.json` are the numbers for yours.)\n"
    )


def quickstart_scores(q: dict[str, Any]) -> str:
    """The eval.json of the fresh-clone quickstart as one table: scores, perplexity, decode speed, sizes."""
    e = q["eval"]
    base, adapters = e["base"], e["adapters"]
    names = list(adapters)
    rows = ["| | base | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for name, entry in adapters.items():
        metrics = list(entry["metrics"])
        cells = [
            " / ".join(f"{base['metrics'][f'{name}/{m}']:.3f}" for m in metrics),
            *(
                "**" + " / ".join(f"{entry['metrics'][m]:.3f}" for m in metrics) + "**" if other == name else ""
                for other in names
            ),
        ]
        rows.append(f"| {name}: " + " / ".join(f"`{m}`" for m in metrics) + " | " + " | ".join(cells) + " |")

    def ppl(entry: dict[str, Any]) -> str:
        p = entry["perplexity"]
        return f"{p['pytorch']:.4f} -> {p['onnx']:.4f} ({p['onnx'] / p['pytorch'] - 1:+.2%})"

    def speed(entry: dict[str, Any]) -> str:
        return f"{entry['decode_tokens_per_s']} ({entry['time_to_first_token_s']} s)"

    sizes = e["sizes_mb"]
    rows += [
        "| perplexity, PyTorch -> int4 package | " + " | ".join(ppl(x) for x in [base, *adapters.values()]) + " |",
        "| decode, tokens/s (time to first token) | " + " | ".join(speed(x) for x in [base, *adapters.values()]) + " |",
        f"| size (MB) | base model {sizes['base_model']} | "
        + " | ".join(f"adapter {sizes['adapters'][n]}" for n in names)
        + " |",
    ]
    held_out = sorted({entry["rows"] for entry in adapters.values()})
    evaluated = sum(s for name, s in q["stages_s"].items() if name.startswith("evaluate "))
    return (
        "\n".join(rows)
        + f"\n\n({'/'.join(map(str, held_out))} held-out rows per dataset; `outputs/quickstart/cpu/eval.json` of "
        f"the fresh-clone run above, kept in bench/quickstart.json. Evaluation took {duration(evaluated)} of its "
        f"{duration(q['finetune_s'])}. Decode speeds are the package as shipped, on the threads its "
        "genai_config.json gives, and move between runs on a shared machine; `make bench` times every engine side "
        "by side.)\n"
    )


PARITY_ROWS = {  # bench/parity_bounds.py's variants, as the table names them
    "healthy": "as built (q4_1 base, int8 adapters)",
    "k_quant_mixed": "base re-rounded (k_quant_mixed)",
    "halved": "adapter weights halved",
    "doubled": "adapter weights doubled",
    "zeroed": "adapter weights zeroed",
    "swapped": "adapter files swapped",
}


def parity_table(p: dict[str, Any]) -> str:
    subjects = list(p["healthy"])
    rows = [
        "| package | "
        + " | ".join(f"{s} KL" for s in subjects)
        + " | "
        + " | ".join(f"{s} top-1" for s in subjects)
        + " | base perplexity vs PyTorch |",
        "|---|" + "---|" * (2 * len(subjects) + 1),
    ]
    for variant, label in PARITY_ROWS.items():
        figures = p[variant]
        rows.append(
            f"| {label} | "
            + " | ".join(f"{figures[s]['kl_nats']:.4f}" for s in subjects)
            + " | "
            + " | ".join(f"{figures[s]['top1_agreement']:.3f}" for s in subjects)
            + f" | {math.exp(figures['base']['loss_difference_nats']) - 1:+.1%} |"
        )
    return "\n".join(rows) + "\n"


def serving(r: dict[str, Any]) -> str:
    v = r["serve"]
    ratios = r["ratios"]
    return (
        "\n".join(serve_table(r))
        + f"\n\nTokens/s of {v['tokens']}-token streamed answers (greedy), over HTTP on 127.0.0.1, from the last "
        f"`make bench` ({machine(r['machine'])}; [bench/RESULTS.md](bench/RESULTS.md)): for one request alone, "
        "after its first token; under load, all clients' tokens over the wall time, each client sending its "
        "requests one after another with the base and the adapters in turn (median time to first token in "
        "brackets). The same package decoded in-process on its own threads, taking turns with the single requests: "
        f"{r['serve']['configurations']['default']['single']['direct']['tokens_per_s']} tokens/s (`serve_single_vs_direct` "
        f"{formatted('serve_single_vs_direct', ratios['serve_single_vs_direct'])}). One process per core gives "
        f"{formatted('serve_8_clients_vs_single', ratios['serve_8_clients_vs_single'])} the aggregate of one client "
        "at 8 clients.\n"
    )


def data_parallel(r: dict[str, Any]) -> str:
    figures = r["data_parallel"]
    runs = figures["runs"]
    most = max(runs, key=int)
    return (
        f"In the last `make bench` ({machine(r['machine'])}), {most} processes trained {runs[most]['tokens_per_s']} "
        f"tokens/s against {runs['1']['tokens_per_s']} for one ({runs[most]['vs_one_process']}x), the "
        f"{figures['adapter']} adapter for {figures['steps']} steps.\n"
    )


def padding(r: dict[str, Any]) -> str:
    p = r["padding"]
    speeds = p["non_padding_tokens_per_s"]
    return (
        f"Measured side by side by `make bench` (bench/train_padding.py; same LoRA, rows, batch size "
        f"{p['batch_size']} and max_seq_len {p['max_seq_len']}, {p['steps']} steps, median of {p['repeats']} runs "
        f"on {machine(r['machine'])}, both through the training pass above), olive-flows' data handling trains "
        f"{speeds['olive-flows']} non-padding tokens/s against {speeds['olive-default']} with Olive's default "
        f"padding: **{p['ratio_olive_flows_vs_olive_default']}x**. Packed (`training.packing: true`), the same "
        f"training ran {speeds['olive-flows packed']} tokens/s, {p['ratio_packed_vs_padded']}x the padded batches "
        f"(these rows are all about {p['mean_tokens_per_row']} tokens long, so a batch of them is little padding). "
        f"On the same rows joined into conversations of one to four exchanges "
        f"({p['multi_turn_mean_tokens_per_row']} tokens per row on average, max_seq_len {p['multi_turn_max_seq_len']}), "
        f"packed trained {speeds['multi-turn packed']} tokens/s against {speeds['multi-turn']} padded: "
        f"**{p['ratio_packed_vs_padded_multi_turn']}x**.\n"
    )


def bench(r: dict[str, Any]) -> str:
    d, b = r["decode"], r["bandwidth"]
    shipped = ", ".join(f"{name} {speed['tokens_per_s']}" for name, speed in d["package_int4"].items())
    pytorch = ", ".join(f"{setup} {speed['tokens_per_s']}" for setup, speed in d["pytorch"].items())
    llama = d["llamacpp"].get("tokens_per_s")
    storage = r["adapters"]["adapter_weights"]
    return (
        f"From the last `make bench` ({duration(r['wall_s'])}) on {machine(r['machine'])}, "
        + ", ".join(f"{k} {v}" for k, v in r["versions"].items() if k in ("onnxruntime-genai", "onnxruntime", "torch"))
        + ":\n\n"
        + "\n".join(targets_table(r))
        + "\n\nDecode, tokens/s after the first of "
        f"{r['settings']['tokens']} greedy tokens: the quickstart package as shipped, "
        + shipped
        + f"; set to all {r['settings']['threads']} CPUs, base {d['package_int4_all_cpus']['tokens_per_s']}; "
        + (f"llama.cpp {llama}; " if llama else "")
        + f"PyTorch with the dates adapter: {pytorch}. The package reads {b['weight_mb_per_token']} MB of weights "
        f"per token against llama.cpp's {b['llamacpp_weight_mb_per_token']} MB of the GGUF, and reaches "
        f"{b['fraction_reached']:.0%} of the memory-bandwidth bound ({b['bound_tokens_per_s']} tokens/s at a "
        f"measured {b['copy_gb_s']} GB/s copy bandwidth). Adapter files: "
        + "; ".join(
            f"{kind} weights {', '.join(f'{rank} {mb} MB' for rank, mb in s['adapter_mb'].items() if rank != 'r16b')}"
            for kind, s in storage.items()
        )
        + ". Training, non-padding tokens/s: "
        + ", ".join(f"{side.replace('_', ' ')} {speed}" for side, speed in r["training"]["tokens_per_s"].items())
        + ".\n"
    )


# Each section: the file it is made from, the function that makes it, and its indent (inside a list item).
SECTIONS: dict[str, tuple[str, Section, str]] = {
    "quickstart-output": ("bench/quickstart.json", quickstart_output, ""),
    "quickstart-time": ("bench/quickstart.json", quickstart_time, ""),
    "quickstart-scores": ("bench/quickstart.json", quickstart_scores, ""),
    "parity": ("bench/parity_bounds.json", parity_table, "  "),
    "serving": ("bench/results.json", serving, ""),
    "data-parallel": ("bench/results.json", data_parallel, ""),
    "padding": ("bench/results.json", padding, "   "),
    "bench": ("bench/results.json", bench, ""),
}


def markers(name: str, source: str) -> tuple[str, str]:
    return (
        f"<!-- BEGIN FIGURES {name}: generated by scripts/readme_figures.py from {source}; do not edit -->",
        f"<!-- END FIGURES {name} -->",
    )


def generate(readme: str) -> str:
    sources: dict[str, dict[str, Any]] = {}
    for name, (source, section, indent) in SECTIONS.items():
        if source not in sources:
            sources[source] = json.loads((REPO / source).read_text(encoding="utf-8"))
        body = textwrap.indent(section(sources[source]), indent) + indent
        readme = replace_section(readme, *markers(name, source), body)
    return readme


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the README's figures are out of date")
    args = parser.parse_args()
    readme = README.read_text(encoding="utf-8")
    updated = generate(readme)
    if args.check:
        if updated != readme:
            print("README.md's figures are out of date: run python scripts/readme_figures.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
