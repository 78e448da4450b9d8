"""Row formats a dataset can be written in: detection, what makes a row valid, and normalization.

Every format is normalized to one of two shapes before training: chat turns
(``{"messages": [...]}``, the loss is on the assistant's answer) or plain text (``{"text": ...}``).
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from typing import Any

CHAT_ROLES = ("system", "user", "assistant")

# (format, the keys that identify it in a row), in detection order. The other instruction shapes
# come last, so that a row detected as another format before they were accepted still is.
SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("chat", ("messages",)),
    ("instruction", ("instruction", "output")),
    ("completion", ("prompt", "completion")),
    ("text", ("text",)),
    ("instruction", ("instruction", "response")),
    ("instruction", ("input", "output")),
)


def detect_format(row: Any) -> str | None:
    """The format whose keys the row has, or None."""
    if isinstance(row, dict):
        for name, keys in SIGNATURES:
            if all(k in row for k in keys):
                return name
    return None


def instruction_keys(row: dict[str, Any]) -> tuple[str, str]:
    """The keys of an instruction row's prompt and answer: (instruction, output) (with optional input),
    (instruction, response) (with optional input) or (input, output); a row with none of these shapes
    is checked as the first."""
    if "instruction" in row and "output" not in row and "response" in row:
        return "instruction", "response"
    if "instruction" not in row and "input" in row and "output" in row:
        return "input", "output"
    return "instruction", "output"


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def chat_messages(row: dict[str, Any]) -> Any:
    """A row's messages; a JSON string (as CSV and SQLite store them) is decoded."""
    messages = row.get("messages")
    if isinstance(messages, str):
        try:
            return json.loads(messages)
        except json.JSONDecodeError:
            return messages
    return messages


def _chat_errors(row: dict[str, Any]) -> list[str]:
    messages = chat_messages(row)
    if isinstance(messages, str):
        return ["'messages' is text but not valid JSON"]
    if not isinstance(messages, list) or not messages:
        return ["expected a non-empty 'messages' list"]
    errors = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            errors.append(f"messages[{i}] is not an object")
            continue
        role = message.get("role")
        if role not in CHAT_ROLES:
            errors.append(f"messages[{i}].role must be one of {', '.join(CHAT_ROLES)}, found {role!r}")
        if not _text(message.get("content")):
            errors.append(f"messages[{i}].content must be non-empty text")
    if not errors and messages[-1].get("role") != "assistant":
        errors.append("the conversation must end with an assistant message (the text the adapter learns)")
    return errors


def _fields_errors(*required: str, optional: tuple[str, ...] = ()) -> Callable[[dict[str, Any]], list[str]]:
    def check(row: dict[str, Any]) -> list[str]:
        errors = [f"'{k}' must be non-empty text" for k in required if not _text(row.get(k))]
        errors += [f"'{k}' must be text" for k in optional if k in row and not isinstance(row[k], str)]
        return errors

    return check


def _instruction_errors(row: dict[str, Any]) -> list[str]:
    prompt, answer = instruction_keys(row)
    optional = ("system",) if prompt == "input" else ("input", "system")
    return _fields_errors(prompt, answer, optional=optional)(row)


ROW_CHECKS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "chat": _chat_errors,
    "instruction": _instruction_errors,
    "completion": _fields_errors("prompt", "completion"),
    "text": _fields_errors("text"),
}


def template_fields(template: dict[str, str]) -> set[str]:
    """Column names a chat template refers to."""
    return {name for text in template.values() for _, name, _, _ in string.Formatter().parse(text) if name}


def _template_column_error(row: dict[str, Any], name: str) -> str | None:
    """Why column ``name`` cannot fill the template (missing, null or blank text), or None.

    Numbers and other non-text values are fine: the template formats them as text."""
    if name not in row:
        return f"column '{name}' used by the template is missing (columns: {', '.join(map(str, row))})"
    value = row[name]
    if value is None:
        return f"column '{name}' used by the template is empty (null)"
    if isinstance(value, str) and not value.strip():
        return f"column '{name}' used by the template is empty ({'only whitespace' if value else 'empty text'})"
    return None


def row_errors(row: Any, fmt: str | None, template: dict[str, str] | None = None) -> list[str]:
    """What is wrong with ``row`` for the declared format or template (an empty list: nothing)."""
    if not isinstance(row, dict):
        return [f"expected a JSON object, found {type(row).__name__}"]
    if template:
        return [error for name in sorted(template_fields(template)) if (error := _template_column_error(row, name))]
    if fmt is None:
        return [f"cannot tell the format from its keys ({', '.join(map(str, row)) or 'none'}); set format or template"]
    return ROW_CHECKS[fmt](row)


def normalize(row: dict[str, Any], fmt: str | None, template: dict[str, str] | None = None) -> dict[str, Any]:
    """A valid row as chat turns ({"messages"}) or plain text ({"text"})."""
    if template:
        turns = [(role, template[role].format(**row)) for role in CHAT_ROLES if role in template]
        return {"messages": [{"role": role, "content": content} for role, content in turns]}
    if fmt == "chat":
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in chat_messages(row)]}
    if fmt == "instruction":
        prompt, answer = instruction_keys(row)
        user = row[prompt] if prompt == "input" or not row.get("input") else f"{row[prompt]}\n\n{row['input']}"
        turns = [("system", row["system"])] if row.get("system") else []
        turns += [("user", user), ("assistant", row[answer])]
        return {"messages": [{"role": role, "content": content} for role, content in turns]}
    if fmt == "completion":
        return {
            "messages": [
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["completion"]},
            ]
        }
    return {"text": row["text"]}


def split_chat(row: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    """Split a normalized chat row into the messages of its prompt and the answer the model should give."""
    messages = row["messages"]
    return messages[:-1], messages[-1]["content"]
