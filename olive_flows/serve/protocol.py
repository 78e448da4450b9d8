"""The request bodies olive-flows serves, checked field by field: a malformed request is a 400 naming
the field (``param``), never a 500. Fields of the OpenAI API that olive-flows cannot honour (tools,
log-probabilities, penalties) are refused when set, not silently ignored."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from olive_flows.evaluate.runtime import Sampling
from olive_flows.serve.errors import ApiError

M = TypeVar("M", bound=BaseModel)
MAX_STOP = 4
# OpenAI fields a request may carry only at their "off" value: olive-flows cannot do them.
UNSUPPORTED = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "logprobs",
    "top_logprobs",
    "response_format",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "best_of",
    "echo",
    "suffix",
)

OFF = {"best_of": 1, "tool_choice": "none"}  # the "off" value where it is not 0 or empty


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    """One chat turn; ``developer`` is the OpenAI API's newer name for ``system``."""

    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def turn(self) -> dict[str, str]:
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class Common(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = ConfigDict(strict=True, extra="allow")
    model: str
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    seed: int | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    n: Literal[1] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _supported(self) -> Common:
        for name in UNSUPPORTED:
            value = (self.model_extra or {}).get(name)
            if value is True or value not in (None, False, [], {}, OFF.get(name, 0)):
                raise ApiError(400, f"'{name}' is not supported by olive-flows serve", param=name, code="unsupported")
        return self

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is not None and any(not s for s in ([value] if isinstance(value, str) else value)):
            raise ValueError("stop sequences must be non-empty")
        return value

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def new_tokens(self) -> int | None:
        return self.max_tokens

    def sampling(self) -> Sampling:
        """The OpenAI API's defaults (temperature 1, top_p 1); temperature 0 is greedy."""
        return Sampling(
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k or 0,
            seed=self.seed,
        )


class ChatRequest(Common):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None

    @property
    def new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def turns(self) -> list[dict[str, str]]:
        return [m.turn() for m in self.messages]


class CompletionRequest(Common):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]

    @property
    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    id: Annotated[str, Field(min_length=1, max_length=200)]
    rating: Annotated[int, Field(ge=1, le=5)]
    comment: Annotated[str, Field(max_length=10_000)] | None = None


def _union_member(part: str) -> bool:
    """Whether a part of a pydantic error location names a member of a union (``str``,
    ``list[str]``, ``function-after[...]``) rather than a field or an index."""
    return part in ("str", "int", "float", "bool") or "[" in part or part.startswith(("function-", "constrained-"))


def parse(body: bytes, model: type[M]) -> M:
    """``body`` as ``model``, or a 400 naming the first field at fault."""
    try:
        data: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = [str(part) for part in error["loc"] if not _union_member(str(part))]
        param = ".".join(where) or None
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = f"Missing required parameter: '{param}'"
        elif param:
            message = f"Invalid value for '{param}': {message}"
        raise ApiError(400, message, param=param, code="invalid_value") from None
