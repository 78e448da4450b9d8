"""Row formats a dataset can be written in, and what makes a row of each format valid."""

from __future__ import annotations

from typing import Any

CHAT_ROLES = ("system", "user", "assistant")


def chat_row_errors(row: Any) -> list[str]:
    """What is wrong with one ``chat`` row ({"messages": [{"role", "content"}, ...]}), or nothing."""
    if not isinstance(row, dict):
        return [f"expected a JSON object, found {type(row).__name__}"]
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return ["expected a non-empty 'messages' list"]
    errors = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            errors.append(f"messages[{i}] is not an object")
            continue
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            errors.append(f"messages[{i}].role must be one of {', '.join(CHAT_ROLES)}, found {role!r}")
        if not isinstance(content, str) or not content.strip():
            errors.append(f"messages[{i}].content must be non-empty text")
    if not errors and messages[-1].get("role") != "assistant":
        errors.append("the conversation must end with an assistant message (the text the adapter learns)")
    return errors


ROW_CHECKS = {"chat": chat_row_errors}


def row_errors(row: Any, fmt: str) -> list[str]:
    """What is wrong with ``row`` for the declared format ``fmt``."""
    return ROW_CHECKS[fmt](row)


def split_chat(row: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    """Split a valid chat row into the messages of its prompt and the answer the model should give."""
    messages = row["messages"]
    return messages[:-1], messages[-1]["content"]
