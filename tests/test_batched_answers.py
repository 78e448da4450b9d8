"""Evaluation's answers: batches of equal-length prompts only (evaluate/runtime.py), every prompt
answered, one prompt at a time the very answers chat gives, rows cut where their scores are settled
without changing the others, and answers read off the scoring pass only where greedy decoding gives
them (evaluate/evaluation.py)."""

from __future__ import annotations

import numpy as np

from olive_flows.data.tokenize import IGNORE, Encoded
from olive_flows.evaluate.evaluation import greedy_start
from olive_flows.evaluate.perplexity import PackageScorer
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


def answered_example(prompt: list[int], answer: list[int]) -> Encoded:
    """A scored row: ``prompt`` then ``answer``, the answer's tokens labelled."""
    return Encoded(input_ids=prompt + answer, labels=[IGNORE] * len(prompt) + answer, full_length=len(prompt + answer))


def test_an_answer_is_read_off_scoring_only_where_greedy_decoding_would_give_it():
    """greedy_start, on made-up top tokens: positions 2.. predict the answer [5, 6, 7] and then 9 (end)."""
    prompt, stop = [1, 2, 3], {9}
    example = answered_example(prompt, [5, 6, 7, 9, 4])
    assert greedy_start(prompt, example, np.array([5, 6, 7, 9, 4]), stop, 32) == ([5, 6, 7], True), "to the end token"
    assert greedy_start(prompt, example, np.array([5, 6, 9, 0, 0]), stop, 32) == ([5, 6], True), "the end comes early"
    assert greedy_start(prompt, example, np.array([5, 6, 7, 9, 4]), stop, 2) == ([5, 6], True), "max_new_tokens"
    assert greedy_start(prompt, example, np.array([5, 8, 7, 9, 4]), stop, 32) == ([5, 8], False), "8: greedy's, not 6"
    assert greedy_start(prompt, example, np.array([5, 8, 7, 9, 4]), stop, 2) == ([5, 8], True)
    assert greedy_start([1, 2, 4], example, np.array([5, 6, 7, 9, 4]), stop, 32) == ([], False), "another prompt"
    truncated = answered_example(prompt, [5, 6])
    assert greedy_start(prompt, truncated, np.array([5, 6]), stop, 32) == ([5, 6], False), "the reference ends first"
    unscored = Encoded(input_ids=example.input_ids, labels=[IGNORE] * 4 + [6, 7, 9, 4], full_length=8)
    assert greedy_start(prompt, unscored, np.array([6, 7, 9, 4]), stop, 32) == ([], False), "no logits for the first"


def test_a_row_cut_early_leaves_the_rest_of_its_batch_as_it_was(tiny_package):
    """answer_batches' settled: the cut row's answer is the start of its whole answer, and the rows
    decoded beside it get the answers they get without the cut."""
    runtime = PackageRuntime(tiny_package)
    prompts = [runtime.prompt_tokens([{"role": "user", "content": f"Date: {day} May 2020"}]) for day in (1, 2, 3)]
    whole = {i: text for batch in runtime.answer_batches(prompts, None, 6, 8) for i, text in batch.items()}
    seen: list[tuple[int, str]] = []

    def settled(index: int, text: str) -> bool:
        seen.append((index, text))
        return index == 1

    cut = {i: text for batch in runtime.answer_batches(prompts, None, 6, 8, settled) for i, text in batch.items()}
    assert cut[0] == whole[0] and cut[2] == whole[2], "the other rows as without the cut"
    assert cut[1] and whole[1].startswith(cut[1]) and cut[1] != whole[1], "the cut row stops after its first piece"
    assert [text for index, text in seen if index == 1] == [cut[1]], "asked once, then never again"


def test_scoring_a_row_whose_reference_is_the_greedy_answer_reads_that_answer_off(tiny_package):
    """On the real package: scoring the package's own greedy answer shows that answer, the text
    generation gives; a reference it would not produce is left to generation."""
    runtime = PackageRuntime(tiny_package)
    stop = set(runtime.tokenizer.eos_token_ids)
    for adapter in (None, "dates"):
        prompt = runtime.prompt_tokens([{"role": "user", "content": "Date: 1 May 2020"}])
        generator = runtime.generator(len(prompt) + 8, adapter)
        generator.append_tokens(prompt)
        answer: list[int] = []
        while len(answer) < 6:
            generator.generate_next_token()
            if (token := int(generator.get_next_tokens()[0])) in stop:
                break
            answer.append(token)
        assert answer, "the package answers something"
        end = [next(iter(stop))] if len(answer) < 6 else []
        own = answered_example(prompt, answer + end)
        top = PackageScorer(runtime, adapter, len(own.input_ids) + 1).logits(own).argmax(axis=-1)
        assert greedy_start(prompt, own, top, stop, 6) == (answer, True)
        assert runtime.text(answer) == runtime.generate([{"role": "user", "content": "Date: 1 May 2020"}], adapter, 6)
        other = answered_example(prompt, [answer[0] + 1, *answer[1:], *end])
        top = PackageScorer(runtime, adapter, len(other.input_ids) + 1).logits(other).argmax(axis=-1)
        assert greedy_start(prompt, other, top, stop, 6) == (answer[:1], False), "greedy's own first token"
