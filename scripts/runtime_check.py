"""Does a package generate the same tokens on another onnxruntime-genai?

    python scripts/runtime_check.py PACKAGE [--genai 0.14.1] [--onnxruntime 1.31.1] [--tokens 24]

Creates, once, a side environment with only those two runtime versions (from the package registry)
under ``$OLIVE_FLOWS_CACHE/runtimes/``. Then it greedy-decodes the same prompts with the package's
base model and with each of its adapters here and there, and compares the tokens. Exit code 0 when
every sequence is identical (and each adapter changes the base's answer to at least one prompt), 1
otherwise. The probe (``--probe``) needs nothing but onnxruntime-genai, so it runs in the side
environment as it is.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import venv
from pathlib import Path

PROMPTS = (
    "What is the capital of France?",
    "Normalize this date: 5 March 2021",
    "Extract the person: Ana Ruiz, 34, lives in Lyon.",
)


def probe(package: Path, tokens: int) -> dict[str, list[list[int]]]:
    """Greedy tokens for each prompt, with no adapter ("base") and with each adapter file of ``package``."""
    import onnxruntime_genai as og

    model = og.Model(str(package))
    config = json.loads((package / "genai_config.json").read_text(encoding="utf-8"))["model"]
    window = int((config["decoder"].get("sliding_window") or {}).get("window_size", 0))
    window = min(window, config.get("context_length") or window)
    tokenizer = og.Tokenizer(model)
    adapters = og.Adapters(model)
    names = sorted(p.name.removesuffix(".onnx_adapter") for p in (package / "adapters").glob("*.onnx_adapter"))
    for name in names:
        adapters.load(str(package / "adapters" / f"{name}.onnx_adapter"), name)
    found: dict[str, list[list[int]]] = {}
    for adapter in [None, *names]:
        found[adapter or "base"] = []
        for prompt in PROMPTS:
            text = tokenizer.apply_chat_template(
                json.dumps([{"role": "user", "content": prompt}]), add_generation_prompt=True
            )
            ids = list(tokenizer.encode(text))
            params = og.GeneratorParams(model)
            # a sliding-window model (Gemma 2) needs a KV cache of at least its window
            capacity = max(len(ids) + tokens, window)
            params.set_search_options(max_length=capacity, min_length=len(ids) + tokens, random_seed=0)
            generator = og.Generator(model, params)
            if adapter:
                generator.set_active_adapter(adapters, adapter)
            generator.append_tokens(ids)
            for _ in range(tokens):
                generator.generate_next_token()
            found[adapter or "base"].append([int(t) for t in generator.get_sequence(0)[len(ids) :]])
    return found


def side_environment(genai: str, onnxruntime: str) -> Path:
    """The Python of a venv holding exactly these runtime versions, created on first use."""
    from olive_flows.paths import cache_dir

    folder = cache_dir() / "runtimes" / f"genai-{genai}-ort-{onnxruntime}"
    python = folder / "bin" / "python"
    if not (folder / ".complete").is_file():
        venv.create(folder, with_pip=True, clear=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             f"onnxruntime-genai=={genai}", f"onnxruntime=={onnxruntime}"],
            check=True,
        )  # fmt: skip
        (folder / ".complete").write_text("", encoding="utf-8")
    return python


def versions(python: Path) -> str:
    code = "import onnxruntime, onnxruntime_genai; print(onnxruntime_genai.__version__, onnxruntime.__version__)"
    genai, ort = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return f"onnxruntime-genai {genai} (onnxruntime {ort})"


def tokens_with(python: Path, package: Path, tokens: int) -> dict[str, list[list[int]]]:
    result = subprocess.run(
        [str(python), __file__, "--probe", str(package), "--tokens", str(tokens)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"{versions(python)} could not run {package}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--genai", default="0.14.1", help="onnxruntime-genai version of the side environment")
    parser.add_argument("--onnxruntime", default="1.31.1", help="onnxruntime version of the side environment")
    parser.add_argument("--tokens", type=int, default=24, help="tokens generated per prompt")
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.package, args.tokens)))
        return 0
    here, there = Path(sys.executable), side_environment(args.genai, args.onnxruntime)
    mine, theirs = tokens_with(here, args.package, args.tokens), tokens_with(there, args.package, args.tokens)
    print(f"{args.package}: {versions(here)} against {versions(there)}, {len(PROMPTS)} prompts, {args.tokens} tokens")
    failed = False
    for label, sequences in mine.items():
        same = sequences == theirs.get(label)
        changes = label == "base" or sequences != mine["base"]
        failed |= not (same and changes)
        verdict = "identical" if same else "DIFFERENT"
        note = "" if changes else " (but the adapter does not change the base's answers)"
        print(f"  {label:<12} {verdict}{note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
