"""Opt-in cleaning of normalized rows: whitespace, personal data, exact and near duplicates.

Everything here works on normalized rows ({"messages"} or {"text"}) and never needs a tokenizer;
length filters in tokens are applied where the tokenizer is, at tokenization.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200c\u200d\u2060\ufeff]")
SPACES = re.compile(r"[ \t\u00a0]+")
BLANK_LINES = re.compile(r"\n{3,}")

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"')\]]+", re.IGNORECASE)
PHONE = re.compile(r"(?<![\w-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}(?![\w-])")
DATE_LIKE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")
TRAILING_PUNCTUATION = ".,;:!?"


def _url(match: re.Match) -> str:
    url = match.group(0)
    kept = url.rstrip(TRAILING_PUNCTUATION)
    return "<URL>" + url[len(kept) :]


def _phone(match: re.Match) -> str:
    number = match.group(0)
    digits = sum(c.isdigit() for c in number)
    return "<PHONE>" if digits >= 7 and not DATE_LIKE.fullmatch(number) else number


# How `clean.scrub` replaces each kind of personal data, in the order they are applied.
SCRUBBERS: dict[str, tuple[re.Pattern, Callable[[re.Match], str] | str]] = {
    "email": (EMAIL, "<EMAIL>"),
    "url": (URL, _url),
    "phone": (PHONE, _phone),
}


def texts(row: dict[str, Any]) -> Iterator[str]:
    """Every text of a normalized row."""
    if "messages" in row:
        yield from (m["content"] for m in row["messages"])
    else:
        yield row["text"]


def map_texts(row: dict[str, Any], func: Callable[[str], str]) -> dict[str, Any]:
    """A copy of ``row`` with ``func`` applied to each of its texts."""
    if "messages" in row:
        return {"messages": [{**m, "content": func(m["content"])} for m in row["messages"]]}
    return {"text": func(row["text"])}


def normalize_whitespace(text: str) -> str:
    """NFC, no control or zero-width characters, single spaces, at most one blank line, trimmed."""
    text = CONTROL.sub("", unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n"))
    lines = [SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def scrub(text: str, kinds: list[str]) -> str:
    """``text`` with each kind of personal data replaced by a placeholder (emails before URLs)."""
    for kind, (pattern, replacement) in SCRUBBERS.items():
        if kind in kinds:
            text = pattern.sub(replacement, text)
    return text


def row_key(row: dict[str, Any]) -> str:
    """Identity of a row for exact-duplicate detection and duplicate-aware splitting."""
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def _shingles(text: str, size: int = 5) -> set[str]:
    text = re.sub(r"\W+", " ", text.lower()).strip()
    return {text[i : i + size] for i in range(max(1, len(text) - size + 1))}


_SEEDS = np.random.default_rng(20261122).integers(1, 2**61 - 1, size=(2, 128), dtype=np.uint64)
_MERSENNE = np.uint64((1 << 61) - 1)


def _minhash(shingles: set[str], permutations: int) -> tuple[int, ...]:
    """MinHash signature: for each of ``permutations`` hash functions a*x+b, the smallest value."""
    digests = np.array(
        [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big") for s in shingles], dtype=np.uint64
    )
    a, b = _SEEDS[0, :permutations, None], _SEEDS[1, :permutations, None]
    return tuple(((a * digests[None, :] + b) & _MERSENNE).min(axis=1).tolist())


def near_duplicate_groups(rows: list[dict[str, Any]], threshold: float = 0.9, permutations: int = 64) -> list[int]:
    """For each row, the index of the first row it nearly duplicates (itself when none).

    Rows are compared by the Jaccard similarity of their character 5-gram shingles, estimated with
    MinHash and banded locality-sensitive hashing; candidate pairs are confirmed exactly.
    """
    shingle_sets = [_shingles(" ".join(texts(row))) for row in rows]
    bands, width = 16, permutations // 16
    buckets: dict[tuple, list[int]] = {}
    group = list(range(len(rows)))
    for i, shingles in enumerate(shingle_sets):
        signature = _minhash(shingles, permutations)
        candidates = set()
        for band in range(bands):
            key = (band, signature[band * width : (band + 1) * width])
            candidates.update(buckets.get(key, []))
            buckets.setdefault(key, []).append(i)
        for j in sorted(candidates):
            other = shingle_sets[j]
            if len(shingles & other) / len(shingles | other) >= threshold:
                group[i] = group[j]
                break
    return group


def clean_rows(rows: list[dict[str, Any]], options: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Apply the dataset's ``clean`` options; return the rows kept and counts of what was changed."""
    counts = {"whitespace_normalized": 0, "scrubbed": 0, "exact_duplicates": 0, "near_duplicates": 0}
    if options.get("normalize_whitespace"):
        cleaned = [map_texts(row, normalize_whitespace) for row in rows]
        counts["whitespace_normalized"] = sum(a != b for a, b in zip(rows, cleaned, strict=True))
        rows = cleaned
    if options.get("scrub"):
        cleaned = [map_texts(row, lambda t: scrub(t, options["scrub"])) for row in rows]
        counts["scrubbed"] = sum(a != b for a, b in zip(rows, cleaned, strict=True))
        rows = cleaned
    if options.get("dedupe"):
        seen: set[str] = set()
        unique = []
        for row in rows:
            key = row_key(row)
            if key not in seen:
                seen.add(key)
                unique.append(row)
        counts["exact_duplicates"] = len(rows) - len(unique)
        rows = unique
    if options.get("dedupe") == "near":
        groups = near_duplicate_groups(rows, options.get("near_threshold", 0.9))
        kept = [row for i, row in enumerate(rows) if groups[i] == i]
        counts["near_duplicates"] = len(rows) - len(kept)
        rows = kept
    return rows, counts
