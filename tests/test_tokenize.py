"""Training examples: the loss is on the assistant's answers only, and long rows are truncated and counted."""

from __future__ import annotations

import pytest

from olive_flows.data.tokenize import IGNORE, encode, encode_chat, percentiles


@pytest.fixture(scope="module")
def tokenizer(smollm2_folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_folder)


CONVERSATION = [
    {"role": "system", "content": "You normalize dates."},
    {"role": "user", "content": "5 March 2021"},
    {"role": "assistant", "content": "2021-03-05"},
    {"role": "user", "content": "the 1st of May, 1999"},
    {"role": "assistant", "content": "1999-05-01"},
]


def test_every_prompt_token_is_ignored_and_every_answer_token_learned(tokenizer):
    example = encode_chat(tokenizer, CONVERSATION, max_seq_len=512)
    learned = [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE]
    ignored = [t for t, label in zip(example.input_ids, example.labels, strict=True) if label == IGNORE]
    assert tokenizer.decode(learned) == "2021-03-05<|im_end|>\n1999-05-01<|im_end|>\n"
    rendered = tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert tokenizer.decode(example.input_ids) == rendered
    assert "5 March 2021" in tokenizer.decode(ignored) and "2021-03-05" not in tokenizer.decode(ignored)
    assert all(label in (IGNORE, token) for token, label in zip(example.input_ids, example.labels, strict=True))


def test_loss_on_all_tokens_when_asked(tokenizer):
    example = encode_chat(tokenizer, CONVERSATION, max_seq_len=512, loss_on="all")
    assert example.labels == example.input_ids


def test_truncation_is_counted_and_a_row_without_answer_learns_nothing(tokenizer):
    full = encode_chat(tokenizer, CONVERSATION, max_seq_len=512)
    cut = encode_chat(tokenizer, CONVERSATION, max_seq_len=20)
    assert cut.truncated and not full.truncated and cut.full_length == full.full_length
    assert len(cut.input_ids) == 20 and cut.learned == 0, "the first answer starts after token 20"


def test_text_rows_learn_everything_between_bos_and_eos(tokenizer):
    example = encode(tokenizer, {"text": "plain text"}, max_seq_len=64)
    assert example.labels == example.input_ids
    assert example.input_ids[-1] == tokenizer.eos_token_id


def test_percentiles_are_nearest_rank():
    assert percentiles(list(range(1, 101))) == {"p50": 50, "p90": 90, "p99": 99, "p100": 100}
    assert percentiles([7]) == {"p50": 7, "p90": 7, "p99": 7, "p100": 7}
