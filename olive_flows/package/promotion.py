"""The promotion gate (``promote``): whether a newly built package may replace the current one.

With ``when: better`` a new package becomes current only if, on every metric named, it is not worse
than the current package by more than ``tolerance``; task metrics are better higher, perplexity
lower. A package that loses is kept as a candidate version and the run exits with code 8.
"""

from __future__ import annotations

import math
from typing import Any


class NotPromoted(Exception):
    """A new package lost to the current one on the promotion metrics; the CLI exits with code 8."""

    exit_code = 8


def metric_value(scores: dict[str, Any], name: str) -> float | None:
    """``<adapter>/<metric>`` of an eval.json (``<adapter>/perplexity``: its ONNX perplexity)."""
    adapter, _, metric = name.partition("/")
    entry = scores.get("adapters", {}).get(adapter, {})
    if metric == "perplexity":
        return (entry.get("perplexity") or {}).get("onnx")
    return entry.get("metrics", {}).get(metric)


def losses(promote: dict[str, Any], new: dict[str, Any], current: dict[str, Any] | None) -> list[str]:
    """Why the new package's scores lose to the current one's (empty: promote it). Always promoted
    with ``when: always``, when there is no current package, or when it has no score to compare."""
    if promote["when"] == "always" or not current:
        return []
    found = []
    for name in promote["metrics"]:
        was, now = metric_value(current, name), metric_value(new, name)
        if was is None:
            continue
        lower_is_better = name.endswith("/perplexity")
        worse = (
            now is None
            or not math.isfinite(now)
            or (now > was + promote["tolerance"] if lower_is_better else now < was - promote["tolerance"])
        )
        if worse:
            found.append(f"{name} {now} against the current package's {was} (tolerance {promote['tolerance']})")
    return found
