"""Where evaluation.parity's default bounds come from: the quickstart package as built, and copies of it
with adapters broken on purpose, scored against the PyTorch model and PEFT adapters they came from.

    .venv/bin/python bench/parity_bounds.py      (after make finetune; about 15 minutes)

Variants, each a copy of the quickstart's cpu package evaluated with ``olive-flows eval``:
  healthy   as built (int4 q4_1 base, int8 adapter weights)
  swapped   the two adapter files exchanged: each name loads the other's weights
  zeroed    every LoRA weight zero: the adapter does nothing (a file of an adapter that learned nothing)
  halved    every LoRA weight halved: the adapter exported at half its alpha
  doubled   every LoRA weight doubled
and k_quant_mixed: the same training exported for one more target whose int4 re-rounds the base's
Q4_1 weights (a healthy export, and the worst the quickstart's model knows).
Writes bench/parity_bounds.json: parity per variant (KL per token, top-1 agreement where PyTorch is
confident, loss difference), for the base and each adapter. ``--variants NAME ...`` measures only
those and keeps the others' figures in the file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from olive_flows.package.adapter_switch import FLAG  # not a weight: selects the adapter branch
from olive_flows.package.adapter_weights import SCALE_SUFFIX  # int8 adapter weights carry a scale each

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"


def rescaled(factor: float) -> Callable[[Path], None]:
    """Multiply every LoRA weight of each adapter file by ``factor`` (int8 weights: through their scales)."""

    def apply(package: Path) -> None:
        from olive.common.utils import load_weights, save_weights

        for path in (package / "adapters").glob("*.onnx_adapter"):
            weights = load_weights(path)
            int8 = any(name.endswith(SCALE_SUFFIX) for name in weights)
            scaled = {
                n: (w * np.asarray(factor, w.dtype) if n != FLAG and (n.endswith(SCALE_SUFFIX) or not int8) else w)
                for n, w in weights.items()
            }
            save_weights(scaled, path, "onnx_adapter")

    return apply


def swapped(package: Path) -> None:
    contacts, dates = package / "adapters" / "contacts.onnx_adapter", package / "adapters" / "dates.onnx_adapter"
    held = contacts.read_bytes()
    contacts.write_bytes(dates.read_bytes())
    dates.write_bytes(held)


VARIANTS: dict[str, Callable[[Path], None] | None] = {
    "healthy": None,
    "swapped": swapped,
    "zeroed": rescaled(0.0),
    "halved": rescaled(0.5),
    "doubled": rescaled(2.0),
}


REQUANTIZED = "k_quant_mixed"
EXTRA_TARGET = [
    f"targets.kq.{k}" for k in ("device=cpu", "precision=int4", f"int4.algorithm={REQUANTIZED}", "adapter_weights=int8")
]


def requantized(root: Path) -> dict:
    """Parity of the quickstart's training exported for an extra target with k_quant_mixed int4."""
    command = [sys.executable, "-m", "olive_flows", "export", "quickstart", *EXTRA_TARGET]
    subprocess.run(
        [*command, "evaluation.parity.enforce=false", "--target", "kq"], check=True, capture_output=True, cwd=REPO
    )
    by = json.loads((root / "kq" / "eval.json").read_text(encoding="utf-8"))["parity"]["by"]
    shutil.rmtree(root / "kq")
    return by


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=[*VARIANTS, REQUANTIZED], default=[*VARIANTS, REQUANTIZED])
    parser.add_argument("--package", type=Path, default=REPO / "outputs" / "quickstart" / "cpu", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=BENCH / "parity_bounds.json", help=argparse.SUPPRESS)
    args = parser.parse_args()  # --package and --output: the tests run the variants on a tiny package
    built = args.package.resolve()
    root = built.parent
    if not (built / "manifest.json").is_file():
        print("build the quickstart first: make finetune", file=sys.stderr)
        return 1
    figures = json.loads(args.output.read_text(encoding="utf-8")) if args.output.is_file() else {}
    if REQUANTIZED in args.variants:
        print(f"[parity] {REQUANTIZED}", file=sys.stderr, flush=True)
        figures[REQUANTIZED] = requantized(root)
    for name, breaks in VARIANTS.items():
        if name not in args.variants:
            continue
        copy = root / f"parity-{name}"  # beside the package: evaluation finds _data/ and _peft/ there
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(built, copy)
        if breaks:
            breaks(copy)
        print(f"[parity] {name}", file=sys.stderr, flush=True)
        subprocess.run(
            [sys.executable, "-m", "olive_flows", "eval", str(copy), "evaluation.parity.enforce=false"],
            check=True, capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
        figures[name] = json.loads((copy / "eval.json").read_text(encoding="utf-8"))["parity"]["by"]
        shutil.rmtree(copy)
    args.output.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"{'variant':<14}{'subject':<10}{'KL nats/token':>15}{'top-1 agreement':>17}{'loss diff nats':>16}")
    for name, by in figures.items():
        for subject, entry in by.items():
            top1 = "-" if entry["top1_agreement"] is None else f"{entry['top1_agreement']:.3f}"
            print(f"{name:<14}{subject:<10}{entry['kl_nats']:>15.5f}{top1:>17}{entry['loss_difference_nats']:>16.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
