"""Turn normalized rows into training examples: token ids, and labels that say which tokens are learned.

For chat rows only the assistant's turns are learned by default (prompt tokens get the label -100,
which the loss ignores); plain text is learned whole. Rows longer than max_seq_len are truncated
and counted; a row left with no learned token is dropped. The same code serves training (through
Olive's data config, see plugins/tokenize_component.py) and ``olive-flows data check``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IGNORE = -100  # the label transformers' loss skips


class TemplateError(ValueError):
    """The chat template cannot mark assistant turns (it does not render turn by turn as a prefix)."""


@dataclass(frozen=True)
class Encoded:
    """One training example."""

    input_ids: list[int]
    labels: list[int]
    full_length: int  # tokens before truncation

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.input_ids)

    @property
    def learned(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns.

    A span runs from where the template's generation prompt ends to the end of that turn, so it
    covers the answer and the template's end-of-turn marker (the model learns to stop).
    """
    text = _render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        through = _render(tokenizer, messages[: i + 1])
        if not (through.startswith(before) and text.startswith(through)):
            raise TemplateError(
                "the model's chat template does not render a conversation turn by turn, so assistant "
                "tokens cannot be told apart; set training.loss_on: all"
            )
        spans.append((len(before), len(through)))
    return text, spans


def encode_chat(
    tokenizer: Any, messages: list[dict[str, str]], max_seq_len: int, loss_on: str = "assistant"
) -> Encoded:
    """Token ids of the rendered conversation; labels on assistant turns only unless ``loss_on`` is "all"."""
    if loss_on == "all":
        text, spans = _render(tokenizer, messages), None
    else:
        text, spans = assistant_spans(tokenizer, messages)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=spans is not None)
    ids = list(encoding["input_ids"])
    if spans is None:
        labels = list(ids)
    else:
        labels = [
            token if any(start <= begin < end for start, end in spans) else IGNORE
            for token, (begin, _) in zip(ids, encoding["offset_mapping"], strict=True)
        ]
    return Encoded(ids[:max_seq_len], labels[:max_seq_len], len(ids))


def encode_text(tokenizer: Any, text: str, max_seq_len: int) -> Encoded:
    """Token ids of plain text between the model's begin and end tokens, all of them learned."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if tokenizer.bos_token_id is not None:
        ids.insert(0, tokenizer.bos_token_id)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return Encoded(ids[:max_seq_len], ids[:max_seq_len], len(ids))


def encode(tokenizer: Any, row: dict[str, Any], max_seq_len: int, loss_on: str = "assistant") -> Encoded:
    """A normalized row ({"messages"} or {"text"}) as a training example."""
    if "messages" in row:
        return encode_chat(tokenizer, row["messages"], max_seq_len, loss_on)
    return encode_text(tokenizer, row["text"], max_seq_len)


def percentiles(values: list[int], points: tuple[int, ...] = (50, 90, 99, 100)) -> dict[str, int]:
    """Nearest-rank percentiles of ``values`` (p100 is the maximum)."""
    if not values:
        return {}
    ordered = sorted(values)
    return {f"p{p}": ordered[min(len(ordered) - 1, max(0, -(-p * len(ordered) // 100) - 1))] for p in points}
