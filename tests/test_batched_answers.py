"""Evaluation's batched answers (evaluate/runtime.py): batches of equal-length prompts only, every
prompt answered, and one prompt at a time the very answers chat gives."""

from __future__ import annotations

from olive_flows.evaluate.runtime import PackageRuntime, equal_length_batches


def test_batches_hold_one_length_each_and_every_index_once():
    lengths = [3, 5, 3, 3, 5, 4, 3]
    batches = equal_length_batches(lengths, 2)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(len({lengths[i] for i in batch}) == 1 and len(batch) <= 2 for batch in batches)
    assert batches == [[0, 2], [3, 6], [1, 4], [5]]


def test_batched_answers_cover_every_prompt_and_alone_equal_chat(tiny_package):
    runtime = PackageRuntime(tiny_package)
    texts = ["Date: 1 May 2020", "Date: 2 May 2020", "Date: 3 May 2020", "Normalize 12 June 1999, please"]
    prompts = [runtime.prompt_tokens([{"role": "user", "content": text}]) for text in texts]
    assert len({len(p) for p in prompts[:3]}) == 1 and len(prompts[3]) != len(prompts[0]), "three of one length"
    for adapter in (None, "dates"):
        alone: dict[int, str] = {}
        for batch in runtime.answer_batches(prompts, adapter, 6, 1):
            alone.update(batch)
        chat = [runtime.generate([{"role": "user", "content": text}], adapter, 6) for text in texts]
        assert [alone[i] for i in range(len(texts))] == chat, "one prompt at a time: chat's own answers"
        batched = list(runtime.answer_batches([*prompts, prompts[0]], adapter, 6, 8))
        assert [sorted(batch) for batch in batched] == [[0, 1, 2, 4], [3]], "equal lengths go together"
        answers = {i: text for batch in batched for i, text in batch.items()}
        assert answers[4] == answers[0], "a row's answer does not depend on its neighbours in the batch"
        assert answers[3] == chat[3], "a batch of one is a prompt alone"
