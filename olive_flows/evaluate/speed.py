"""Decode speed of a package: time to first token and tokens per second, base and each adapter."""

from __future__ import annotations

import statistics
import time
from typing import Any


def decode_speed(
    runtime: Any, messages: list[dict[str, str]], adapter: str | None, new_tokens: int, repeats: int
) -> dict[str, float]:
    """Median time to first token and decode tokens/s over ``repeats`` runs of exactly ``new_tokens`` tokens.

    The prompt's prefill is timed separately (time to first token); tokens/s covers the tokens after
    the first, so it measures decoding alone.
    """
    prompt = runtime.prompt_tokens(messages)
    length = len(prompt) + new_tokens
    first, rates = [], []
    for _ in range(repeats):
        generator = runtime.generator(length, adapter, min_length=length)
        started = time.perf_counter()
        generator.append_tokens(prompt)
        generator.generate_next_token()
        after_first = time.perf_counter()
        produced = 1
        while produced < new_tokens and not generator.is_done():
            generator.generate_next_token()
            produced += 1
        finished = time.perf_counter()
        first.append(after_first - started)
        rates.append((produced - 1) / (finished - after_first))
    return {
        "time_to_first_token_s": round(statistics.median(first), 4),
        "tokens_per_s": round(statistics.median(rates), 1),
    }
