"""What ``olive-flows serve`` decides before generating: model ids, request checks, stop sequences."""

from __future__ import annotations

import json

import pytest

from olive_flows.cli.serve_cmd import _loopback
from olive_flows.serve.catalog import Catalog
from olive_flows.serve.engine import StopMatcher
from olive_flows.serve.errors import ApiError
from olive_flows.serve.protocol import ChatRequest, CompletionRequest, FeedbackRequest, parse

CATALOG = Catalog("quickstart", ("contacts", "dates"))
USER = [{"role": "user", "content": "hi"}]


def test_models_by_recipe_and_adapter_name():
    assert CATALOG.ids == ["quickstart", "quickstart:contacts", "quickstart:dates"]
    assert CATALOG.adapter_of("quickstart") is None
    assert CATALOG.adapter_of("quickstart:dates") == "dates" and CATALOG.adapter_of("dates") == "dates"
    for unknown in ("other", "other:dates", "quickstart:nope", ":", ""):
        with pytest.raises(ApiError) as caught:
            CATALOG.adapter_of(unknown)
        assert caught.value.status == 404 and caught.value.param == "model"
        assert "quickstart, quickstart:contacts, quickstart:dates" in caught.value.message


def chat_body(**fields) -> bytes:
    return json.dumps({"model": "quickstart", "messages": USER, **fields}).encode()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{", None),
        (b"[]", None),
        (b"\xff", None),
        (json.dumps({"messages": USER}).encode(), "model"),
        (json.dumps({"model": "quickstart"}).encode(), "messages"),
        (chat_body(messages=[]), "messages"),
        (chat_body(messages="hi"), "messages"),
        (chat_body(messages=[{"role": "robot", "content": "hi"}]), "messages.0.role"),
        (chat_body(messages=[{"role": "user"}]), "messages.0.content"),
        (chat_body(messages=[{"role": "user", "content": 3}]), "messages.0.content"),
        (chat_body(max_tokens=-1), "max_tokens"),
        (chat_body(max_tokens=0), "max_tokens"),
        (chat_body(max_tokens="10"), "max_tokens"),
        (chat_body(max_completion_tokens=-5), "max_completion_tokens"),
        (chat_body(temperature=3), "temperature"),
        (chat_body(temperature="hot"), "temperature"),
        (chat_body(top_p=0), "top_p"),
        (chat_body(top_k=-1), "top_k"),
        (chat_body(n=2), "n"),
        (chat_body(stop=["a", "b", "c", "d", "e"]), "stop"),
        (chat_body(stop=""), "stop"),
        (chat_body(stream="yes"), "stream"),
        (chat_body(seed=1.5), "seed"),
        (chat_body(tools=[{"type": "function"}]), "tools"),
        (chat_body(logprobs=True), "logprobs"),
        (chat_body(presence_penalty=0.5), "presence_penalty"),
    ],
)
def test_malformed_chat_requests_are_400s_naming_the_field(body, param):
    with pytest.raises(ApiError) as caught:
        parse(body, ChatRequest)
    error = caught.value
    assert error.status == 400 and error.param == param
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}
    assert error.body()["error"]["type"] == "invalid_request_error"


def test_well_formed_requests():
    request = parse(chat_body(temperature=0, max_completion_tokens=7, stop="\n", seed=3, user="u1"), ChatRequest)
    assert request.new_tokens == 7 and request.stops == ["\n"] and request.sampling().temperature == 0
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    request = parse(chat_body(messages=[{"role": "developer", "content": parts}]), ChatRequest)
    assert request.turns() == [{"role": "system", "content": "ab"}]
    assert request.sampling().temperature == 1.0  # the OpenAI API's default
    completion = parse(json.dumps({"model": "m", "prompt": ["x"], "max_tokens": 2}).encode(), CompletionRequest)
    assert completion.text == "x" and completion.new_tokens == 2
    assert parse(b'{"id": "chatcmpl-1", "rating": 5}', FeedbackRequest).rating == 5
    for bad in (b'{"id": "x", "rating": 6}', b'{"id": "x", "rating": 0}', b'{"id": "", "rating": 3}', b'{"rating": 3}'):
        with pytest.raises(ApiError):
            parse(bad, FeedbackRequest)


def pieces_through(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = ""
    for piece in pieces:
        out += matcher.feed(piece)
        if matcher.stopped:
            return out, True
    return out + matcher.flush(), False


def test_stop_sequences_across_token_boundaries():
    assert pieces_through(["END"], ["ab", "cE", "N", "Dxyz"]) == ("abc", True)
    assert pieces_through(["END"], ["ab", "cE", "N", "x"]) == ("abcENx", False)
    assert pieces_through(["\n", "##"], ["one", " two#", "#three"]) == ("one two", True)
    assert pieces_through([], ["a", "b"]) == ("ab", False)
    matcher = StopMatcher(["END"])
    assert matcher.feed("xxE") == "xx", "text that may begin a stop sequence is held back"


def test_loopback_addresses():
    assert all(_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(_loopback(h) for h in ("0.0.0.0", "192.168.1.2", "::", "example.com"))


def test_sampling_on_the_logits():
    import numpy as np

    from olive_flows.evaluate.runtime import Sampling

    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert {Sampling(1.0, top_k=1).picker()(logits) for _ in range(20)} == {0}
    assert {Sampling(1.0, top_p=0.4).picker()(logits) for _ in range(20)} == {0}
    assert {Sampling(1.0, top_p=0.75, seed=s).picker()(logits) for s in range(200)} == {0, 1}
    draws = [Sampling(1.0, seed=1).picker()(logits) for _ in range(3)]
    assert len(set(draws)) == 1, "a seed makes sampling repeatable"
    pick = Sampling(1.0, seed=7).picker()
    counts = np.bincount([pick(logits) for _ in range(4000)], minlength=4) / 4000
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.03)
    cold = Sampling(0.1, seed=7).picker()
    assert sum(cold(logits) == 0 for _ in range(200)) > 190, "a low temperature sharpens the distribution"
