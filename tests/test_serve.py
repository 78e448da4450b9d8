"""``olive-flows serve`` as an application meets it: the official ``openai`` client and raw HTTP
against a real server process on 127.0.0.1, on a built package of a tiny model (slow: ~1 minute)."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_server import serving

from olive_flows.data.prepare import Report, normalize_rows
from olive_flows.data.sources import iter_local

pytestmark = pytest.mark.slow
MODELS = ["tiny", "tiny:contacts", "tiny:dates"]
QUESTION = [{"role": "user", "content": "Normalize this date: 5 March 2021"}]


@pytest.fixture(scope="module")
def server(tiny_package, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    with serving(tiny_package, "--log", str(folder / "requests.jsonl"), output=folder / "server.log") as running:
        running.log = folder / "requests.jsonl"
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.api, api_key="unused", max_retries=0)


def greedy(client, model: str, messages=QUESTION, max_tokens: int = 16, **options) -> str:
    answer = client.chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=max_tokens, **options
    )
    return answer.choices[0].message.content


def streamed(client, model: str, messages=QUESTION, max_tokens: int = 16) -> tuple[str, list]:
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=messages,
            temperature=0,
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_models_and_adapters_answer_differently(client):
    assert [m.id for m in client.models.list().data] == MODELS
    answers = {model: greedy(client, model) for model in MODELS}
    assert len(set(answers.values())) == 3, answers
    assert greedy(client, "dates") == answers["tiny:dates"], "an adapter may be named bare"
    with pytest.raises(openai.NotFoundError) as caught:
        greedy(client, "tiny:nope")
    assert "tiny, tiny:contacts, tiny:dates" in caught.value.body["message"]


def test_greedy_answers_equal_olive_flows_chat(client, tiny_package):
    for adapter in (None, "contacts", "dates"):
        command = [sys.executable, "-m", "olive_flows", "chat", str(tiny_package), "--max-new-tokens", "16"]
        command += ["--prompt", QUESTION[0]["content"], *(["--adapter", adapter] if adapter else [])]
        chat = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        assert greedy(client, f"tiny:{adapter}" if adapter else "tiny") == chat.removesuffix("\n")


def test_streaming_adds_up_to_the_answer(client, server):
    for model in MODELS:
        text, chunks = streamed(client, model)
        assert text == greedy(client, model)
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-2].choices[0].finish_reason in ("stop", "length")
        assert chunks[-1].usage.completion_tokens > 0 and chunks[-1].usage.prompt_tokens > 0
    with httpx.stream(
        "POST", server.api + "/chat/completions", json={"model": "tiny", "messages": QUESTION, "stream": True}
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"


def test_usage_stops_and_text_completions(client):
    answer = client.chat.completions.create(model="tiny:dates", messages=QUESTION, temperature=0, max_tokens=12)
    assert answer.usage.completion_tokens <= 12
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    text = answer.choices[0].message.content
    if answer.choices[0].finish_reason == "length" and len(text) > 4:
        stop = text[2:4]
        cut = greedy(client, "tiny:dates", max_tokens=12, stop=[stop])
        assert cut == text[: text.index(stop)]
    completion = client.completions.create(model="tiny", prompt="The capital of France is", max_tokens=5, temperature=0)
    assert completion.choices[0].finish_reason in ("stop", "length") and completion.usage.completion_tokens <= 5
    again = client.completions.create(model="tiny", prompt="The capital of France is", max_tokens=5, temperature=0)
    assert again.choices[0].text == completion.choices[0].text
    sampled = {greedy(client, "tiny", temperature=1.0, seed=s, max_tokens=8) for s in range(4)} if False else set()
    for seed in range(3):
        one = client.chat.completions.create(model="tiny", messages=QUESTION, temperature=1.0, seed=seed, max_tokens=8)
        two = client.chat.completions.create(model="tiny", messages=QUESTION, temperature=1.0, seed=seed, max_tokens=8)
        assert one.choices[0].message.content == two.choices[0].message.content, "a seed makes sampling repeatable"
        sampled.add(one.choices[0].message.content)
    assert len(sampled) > 1


MALFORMED = [
    ("/chat/completions", b"{not json"),
    ("/chat/completions", b"[1, 2]"),
    ("/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}]}'),
    ("/chat/completions", b'{"model": "tiny"}'),
    ("/chat/completions", b'{"model": "tiny", "messages": []}'),
    ("/chat/completions", b'{"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}'),
    ("/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": null}]}'),
    ("/chat/completions", b'{"model": 7, "messages": [{"role": "user", "content": "hi"}]}'),
    ("/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}'),
    (
        "/chat/completions",
        b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10000000}',
    ),
    ("/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}'),
    ("/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "top_p": 2}'),
    ("/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 3}'),
    ("/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stop": 5}'),
    ("/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "logprobs": true}'),
    ("/chat/completions", b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}'),
    ("/completions", b'{"model": "tiny"}'),
    ("/completions", b'{"model": "tiny", "prompt": ["a", "b"]}'),
    ("/completions", b'{"model": "tiny", "prompt": "hi", "max_tokens": "many"}'),
    ("/feedback", b'{"id": "x", "rating": 9}'),
    ("/feedback", b'{"rating": 3}'),
    ("/models/nope", None),
]


def test_malformed_requests_get_openai_errors_and_the_server_keeps_serving(server, client):
    long_prompt = {"model": "tiny", "messages": [{"role": "user", "content": "word " * 3000}]}
    cases = [*MALFORMED, ("/chat/completions", json.dumps(long_prompt).encode())]
    assert len(cases) >= 20
    for path, body in cases:
        if body is None:
            response = httpx.get(server.api + path)
        else:
            response = httpx.post(server.api + path, content=body, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (path, body, response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], error
        assert "Traceback" not in response.text
    too_long = httpx.post(server.api + "/chat/completions", json=long_prompt).json()["error"]["message"]
    assert "2048" in too_long and "tokens" in too_long, "both lengths are named"
    assert httpx.delete(server.api + "/models").status_code == 405
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    assert greedy(client, "tiny")


BODIES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
FIELDS = st.fixed_dictionaries(
    {"model": st.sampled_from([*MODELS, "dates", "x", 3])},
    optional={
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "system", "assistant", "bot", 1]), "content": BODIES}
            ),
            max_size=3,
        ),
        "prompt": BODIES,
        "max_tokens": st.integers(-5, 6) | BODIES,
        "temperature": st.floats(-1, 3) | BODIES,
        "top_p": BODIES,
        "top_k": BODIES,
        "stop": BODIES,
        "stream": st.booleans() | BODIES,
        "seed": BODIES,
        "n": BODIES,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=FIELDS | BODIES, path=st.sampled_from(["/chat/completions", "/completions", "/feedback"]))
def test_no_request_body_makes_a_server_error(server, body, path):
    if isinstance(body, dict) and isinstance(body.get("max_tokens"), int) and body["max_tokens"] > 6:
        body["max_tokens"] = 6  # keep generation short; the bound itself is checked above
    if isinstance(body, dict) and "max_tokens" not in body:
        body["max_tokens"] = 4
    response = httpx.post(server.api + path, json=body, timeout=60)
    assert response.status_code < 500, response.text


def test_concurrent_mixed_requests_are_answered_as_sequential_ones(client):
    prompts = [[{"role": "user", "content": f"Normalize this date: {d} March 2021"}] for d in range(1, 5)]
    jobs = [(model, prompt, i % 2 == 0) for i, (model, prompt) in enumerate((m, p) for p in prompts for m in MODELS)]
    expected = {(model, p[0]["content"]): greedy(client, model, p) for model, p, _ in jobs}

    def ask(job):
        model, prompt, stream = job
        return streamed(client, model, prompt)[0] if stream else greedy(client, model, prompt)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, jobs))
    for (model, prompt, _), answer in zip(jobs, answers, strict=True):
        assert answer == expected[(model, prompt[0]["content"])], model


def wait_idle(server, limit_s: float = 5) -> float:
    started = time.monotonic()
    while httpx.get(server.url + "/health").json()["running"]:
        assert time.monotonic() - started < limit_s, "a generation went on after its client left"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_client_that_leaves_stops_its_generation(server, client):
    """A streamed and a non-streamed request whose clients leave early are cancelled (not answered in
    the log), while the requests sharing the server with them finish. The tiny model decodes thousands
    of tokens a second, so the two leave while six long requests share the process with them."""
    logged = len(server.log.read_text(encoding="utf-8").splitlines())
    body = {"model": "tiny", "messages": QUESTION, "max_tokens": 1500, "stream": True, "temperature": 0}

    def finish(_: int) -> str:
        return greedy(client, "tiny", max_tokens=1500)

    def leave_streamed() -> None:
        with httpx.stream("POST", server.api + "/chat/completions", json=body) as response:
            for number, _ in enumerate(response.iter_lines()):
                if number > 6:
                    break

    def leave_waiting() -> None:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.api + "/chat/completions", json={**body, "stream": False}, timeout=0.3)

    for leave in (leave_streamed, leave_waiting):
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            others = pool.map(finish, range(6))
            time.sleep(0.2)
            leave()
            assert len(list(others)) == 6
    wait_idle(server)
    assert len(server.log.read_text(encoding="utf-8").splitlines()) == logged + 12, (
        "the abandoned requests are not answered"
    )


def test_request_log_and_ratings_become_training_rows(server, client):
    answer = client.chat.completions.create(model="tiny:dates", messages=QUESTION, temperature=0, max_tokens=6)
    unrated = client.chat.completions.create(model="tiny", messages=QUESTION, temperature=0, max_tokens=6)
    low = client.chat.completions.create(model="tiny", messages=QUESTION[:1], temperature=0, max_tokens=5)
    for ident, rating in ((answer.id, 5), (low.id, 2)):
        response = httpx.post(server.api + "/feedback", json={"id": ident, "rating": rating, "comment": "c"})
        assert response.status_code == 200
    lines = [json.loads(line) for line in server.log.read_text(encoding="utf-8").splitlines()]
    logged = {line["id"]: line for line in lines if "id" in line}
    entry = logged[answer.id]
    assert entry["messages"] == [*QUESTION, {"role": "assistant", "content": answer.choices[0].message.content}]
    assert entry["model"] == "tiny:dates" and entry["adapter"] == "dates"
    assert entry["usage"]["completion_tokens"] == answer.usage.completion_tokens
    assert set(entry["timings"]) == {"queued_s", "first_token_s", "total_s"}
    assert unrated.id in logged

    copy = server.log.parent / "copy.jsonl"
    copy.write_text(server.log.read_text(encoding="utf-8") + '{"messages": [{"role": "us')  # a torn last line
    report = Report()
    spec = {"format": "chat", "rating": {"min": 4, "column": "rating"}, "on_error": "skip"}
    rows, _, _ = normalize_rows(iter_local(copy), spec, report)
    assert {"messages": entry["messages"]} in rows
    assert len(report.torn) == 1 and "line" in report.torn[0].format()
    assert report.rating_filtered >= 2, "unrated and low-rated exchanges are left out"


def test_queue_full_is_a_503_with_retry_after(tiny_package, tmp_path):
    """One generating, one waiting: of eight requests sent at once the others are refused."""
    with serving(tiny_package, "--parallel", "1", "--max-queue", "1", output=tmp_path / "server.log") as busy:
        body = {"model": "tiny", "messages": QUESTION, "max_tokens": 1500, "temperature": 0}
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda _: httpx.post(busy.api + "/chat/completions", json=body, timeout=60), range(8))
            )
        refused = [a for a in answers if a.status_code == 503]
        assert refused and len(refused) < 8 and all(a.status_code == 200 for a in answers if a not in refused)
        assert all(int(a.headers["retry-after"]) > 0 and a.json()["error"]["code"] == "server_busy" for a in refused)
        code, seconds = busy.stop()
        assert code == 0 and seconds < 5


def test_api_key(tiny_package, tmp_path):
    env = {"SERVE_KEY": "s3cret"}
    with serving(tiny_package, "--api-key-env", "SERVE_KEY", env=env, output=tmp_path / "server.log") as locked:
        assert httpx.get(locked.api + "/models").status_code == 401
        wrong = httpx.get(locked.api + "/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        keyed = openai.OpenAI(base_url=locked.api, api_key="s3cret", max_retries=0)
        assert [m.id for m in keyed.models.list().data] == MODELS
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=locked.api, api_key="bad", max_retries=0).models.list()
        assert httpx.get(locked.url + "/health").status_code == 200
    missing = subprocess.run(
        [sys.executable, "-m", "olive_flows", "serve", str(tiny_package), "--api-key-env", "NO_SUCH_VAR_X"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "NO_SUCH_VAR_X" in missing.stderr


def test_sigterm_during_a_stream_exits_0_within_seconds(tiny_package, tmp_path):
    with serving(tiny_package, output=tmp_path / "server.log") as running:
        body = {"model": "tiny:dates", "messages": QUESTION, "max_tokens": 1500, "stream": True, "temperature": 0}
        with httpx.stream("POST", running.api + "/chat/completions", json=body) as response:
            next(response.iter_lines())
            code, seconds = running.stop()
    assert code == 0 and seconds < 6, (code, seconds, Path(tmp_path / "server.log").read_text(encoding="utf-8"))


def test_load_8_clients_25_requests_each(tiny_package, tmp_path):
    """8 clients x 25 requests, adapters and streaming mixed, every fifth client leaving mid-stream:
    no server error, every finished answer equal to its sequential answer, and memory that levels off.

    Resident memory is read after a warm-up round and after each of five more. The C allocator
    grows in steps (a new heap for a thread, 8 to 32 MB) at rounds no one can predict, so one
    round's growth says nothing; a leak grows it in every round, so at least one round must leave
    it within 2 MB (10 kB a request; a generator kept alive after its request adds about 500 kB a
    request here)."""
    with serving(tiny_package, "--parallel", "8", output=tmp_path / "server.log") as running:
        client = openai.OpenAI(base_url=running.api, api_key="unused", max_retries=0)
        prompts = [[{"role": "user", "content": f"Normalize this date: {d} May 2020"}] for d in range(1, 6)]
        expected = {(m, i): greedy(client, m, p, max_tokens=10) for m in MODELS for i, p in enumerate(prompts)}

        def worker(number: int) -> list[str]:
            failures = []
            for request in range(25):
                model, index = MODELS[(number + request) % 3], (number * 7 + request) % 5
                if (number + request) % 5 == 0:
                    body = {"model": model, "messages": prompts[index], "max_tokens": 200, "stream": True}
                    with httpx.stream("POST", running.api + "/chat/completions", json=body) as response:
                        if response.status_code >= 500:
                            failures.append(f"{response.status_code} on a stream")
                        for lines, _ in enumerate(response.iter_lines()):
                            if lines >= 3:
                                break
                    continue
                answer = (streamed if request % 2 else lambda *a, **k: (greedy(*a, **k), None))(
                    client, model, prompts[index], max_tokens=10
                )[0]
                if answer != expected[(model, index)]:
                    failures.append(f"{model} {index}: {answer!r} != {expected[(model, index)]!r}")
            return failures

        resident = []
        started = time.monotonic()
        for _ in range(6):  # the first round warms up: the allocators grow to the load's peak
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                failures = [f for found in pool.map(worker, range(8)) for f in found]
            assert not failures, failures[:5]
            wait_idle(running, 10)
            resident.append(running.rss_kb())
        assert time.monotonic() - started < 600
        growth = [after - before for before, after in itertools.pairwise(resident)]
        assert min(growth) <= 2048, f"resident memory grew in every round: {resident} kB"
        assert resident[-1] <= resident[0] * 1.30, f"resident memory grew from {resident[0]} to {resident[-1]} kB"
        assert " 500 " not in (tmp_path / "server.log").read_text(encoding="utf-8")
        code, _ = running.stop()
        assert code == 0
