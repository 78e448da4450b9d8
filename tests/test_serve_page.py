"""The chat page at ``/`` in a real headless Chromium, against a real ``olive-flows serve``.

Picks an adapter, sends a message, checks the streamed answer is the one the API gives for the same
request, rates it, and checks the request log holds the exchange and the rating. Needs Debian's
chromium (``make browser`` installs it) and the playwright package; skipped without either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from live_server import Server, serving

CHROMIUM = Path("/usr/bin/chromium")
# Root, no network: no sandbox, and nothing that phones home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MAX_TOKENS = 12
# The tiny random model's dates adapter answers with newlines only; its contacts adapter mostly
# with visible words (they vary with the build), so the second exchange usually compares text too.
DATES, DATES_MESSAGE = "tiny:dates", "When is the meeting?"
CONTACTS, CONTACTS_MESSAGE = "tiny:contacts", "Hello"
TIMEOUT_MS = 60_000


def ask(page: Any, expect: Any, model: str, message: str) -> str:
    """Send one message as a user would; the answer shown once it has finished streaming."""
    page.select_option("#model", model)
    page.fill("#max-tokens", str(MAX_TOKENS))
    assert page.input_value("#temperature") == "0"
    page.fill("#prompt", message)
    page.click("#send")
    # The rating bar appears under the answer once the stream has ended.
    expect(page.locator(".turn.assistant").last.locator(".rate button")).to_have_count(5)
    assert page.locator(".turn.error").count() == 0
    return page.locator(".turn.assistant .text").last.text_content()


def api_answer(server: Server, model: str, message: str) -> dict[str, Any]:
    """The same request through the API, not streamed."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": message}],
        "temperature": 0,
        "max_tokens": MAX_TOKENS,
    }
    response = httpx.post(server.api + "/chat/completions", json=body, timeout=TIMEOUT_MS / 1000)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == model
    return answer


@pytest.mark.slow
def test_chat_page_streams_the_api_answer_and_records_the_rating(tiny_package, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"no browser at {CHROMIUM} (make browser installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    expect = sync_api.expect

    log_file = tmp_path / "requests.jsonl"
    with serving(tiny_package, "--log", str(log_file), output=tmp_path / "server.log") as server:
        requests: list[str] = []
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.on("request", lambda request: requests.append(request.url))
                page.goto(server.url + "/")
                try:
                    # The model list: the base model and each adapter.
                    options = page.locator("#model option")
                    expect(options).to_have_count(3)
                    assert options.all_text_contents() == ["tiny", CONTACTS, DATES]

                    shown = ask(page, expect, DATES, DATES_MESSAGE)
                    api = api_answer(server, DATES, DATES_MESSAGE)
                    assert shown == api["choices"][0]["message"]["content"]
                    assert shown, "the tiny model gave an empty answer: nothing to compare"

                    five = page.locator('.turn.assistant .rate button[data-rating="5"]')
                    five.click()
                    expect(five).to_have_class("chosen")
                    assert page.locator(".rate button.chosen").count() == 1
                    assert page.locator(".turn.error").count() == 0

                    # A new conversation with another adapter: only the new message is sent.
                    page.click("#reset")
                    expect(page.locator("#log .turn")).to_have_count(0)
                    shown_contacts = ask(page, expect, CONTACTS, CONTACTS_MESSAGE)
                    api_contacts = api_answer(server, CONTACTS, CONTACTS_MESSAGE)
                    assert shown_contacts == api_contacts["choices"][0]["message"]["content"]
                    assert page.locator(".turn").count() == 2
                finally:
                    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            finally:
                browser.close()

        code, _ = server.stop()
    assert code == 0, (code, server.output.read_text(encoding="utf-8"))

    # Everything the page loaded came from the server itself.
    assert requests, "the page made no requests"
    outside = [url for url in requests if not url.startswith(server.url + "/")]
    assert not outside, outside

    # Each page exchange, then the API's, with the rating of the page's first exchange between.
    lines = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 5, lines
    exchange, api_exchange, feedback, contacts, api_contacts_exchange = lines
    assert exchange["object"] == "chat.completion"
    assert (exchange["model"], exchange["adapter"]) == (DATES, "dates")
    assert exchange["messages"] == [
        {"role": "user", "content": DATES_MESSAGE},
        {"role": "assistant", "content": shown},
    ]
    assert exchange["sampling"]["max_tokens"] == MAX_TOKENS
    assert exchange["sampling"]["temperature"] == 0
    assert api_exchange["id"] == api["id"] != exchange["id"]
    assert api_exchange["messages"] == exchange["messages"]
    assert feedback["feedback"] == {"id": exchange["id"], "rating": 5}
    assert (contacts["model"], contacts["adapter"]) == (CONTACTS, "contacts")
    assert contacts["messages"] == [
        {"role": "user", "content": CONTACTS_MESSAGE},
        {"role": "assistant", "content": shown_contacts},
    ]
    assert api_contacts_exchange["id"] == api_contacts["id"]
    assert api_contacts_exchange["messages"] == contacts["messages"]
