"""Load a package with onnxruntime-genai and generate with the base model or any of its adapters."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from olive_flows.layout import adapter_files


@dataclass(frozen=True)
class Sampling:
    """How each next token is chosen. Greedy (temperature 0) unless asked otherwise: olive-flows' own
    evaluation and chat answer deterministically; ``serve`` follows the OpenAI API's defaults.

    Sampling is done here on the logits, not by onnxruntime-genai: its sampler sorts the whole
    vocabulary at every token, which doubled the time per token of the quickstart model at
    top_p 1 (13.8 ms against 6.7 ms greedy; 7.2 ms this way)."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def picker(self) -> Callable[[np.ndarray], int]:
        """A function from one position's logits to the sampled token id (seeded: the same seed, the
        same tokens)."""
        rng = np.random.default_rng(self.seed)

        def pick(logits: np.ndarray) -> int:
            scaled = logits.astype(np.float64) / self.temperature
            ids = np.arange(scaled.size)
            if 0 < self.top_k < scaled.size:
                ids = np.argpartition(scaled, -self.top_k)[-self.top_k :]
                scaled = scaled[ids]
            probabilities = np.exp(scaled - scaled.max())
            probabilities /= probabilities.sum()
            if self.top_p < 1:
                order = np.argsort(-probabilities)
                keep = order[: int(np.searchsorted(np.cumsum(probabilities[order]), self.top_p)) + 1]
                ids, probabilities = ids[keep], probabilities[keep] / probabilities[keep].sum()
            cumulative = np.cumsum(probabilities)
            return int(ids[min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1])), ids.size - 1)])

        return pick


GREEDY = Sampling()


def provider_available(genai_provider: str | None) -> bool:
    """Whether this onnxruntime-genai build and machine can run ``genai_provider`` (None: CPU)."""
    if genai_provider is None:
        return True
    import onnxruntime_genai as og

    check = getattr(og, f"is_{genai_provider}_available", None)
    return bool(check and check())


def provider_load_failure(genai_provider: str, error: RuntimeError) -> str | None:
    """Why this machine could not load ``genai_provider`` according to ``error``, or None when the
    error is the package's own.

    onnxruntime-genai reports a provider available when its plugin file is installed; the CUDA
    libraries that plugin links (CUDA 13 for onnxruntime-genai-cuda 0.18, CUDA 12 for 0.14) are only looked for
    when a model loads, and a miss reads "... interface not available: Failed to load library"."""
    if "interface not available" in str(error):
        return f"the {genai_provider} provider failed to load here: {error}"
    return None


def equal_length_batches(lengths: list[int], size: int) -> list[list[int]]:
    """Indices of ``lengths`` in batches of at most ``size``, each batch of one length only.

    Batches never pad: onnxruntime-genai 0.18 did not give a left-padded row the logits it has alone
    (up to 2 apart on the quickstart model, whatever the pad token), where rows of equal length
    prefill to exactly their logits alone."""
    by_length: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        by_length.setdefault(length, []).append(index)
    return [group[i : i + size] for group in by_length.values() for i in range(0, len(group), size)]


def genai_model(folder: Path) -> dict[str, Any]:
    """The ``model`` section of a package's genai_config.json."""
    return json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"]


def sliding_window(folder: Path) -> int:
    """The KV cache a generator of the package in ``folder`` needs at least: its sliding window (from
    genai_config.json; 0 when it has none), within the model's context length."""
    model = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"]
    window = int((model["decoder"].get("sliding_window") or {}).get("window_size", 0))
    return min(window, model.get("context_length") or window)


class PackageRuntime:
    """A package loaded once, with every adapter in its adapters/ folder loaded by file name."""

    def __init__(self, folder: Path, genai_provider: str | None = None, threads: int | None = None, arena: bool = True):
        """``threads``: onnxruntime's intra-op threads, for sharing the cores between server processes
        or timing engines at equal thread counts. None keeps what the package's genai_config.json says,
        as a deployed package runs (olive-flows' CPU packages: onnxruntime's one thread per physical
        core; a config without the option: onnxruntime-genai's half the logical CPUs).
        ``arena``: False turns off onnxruntime's CPU memory arena, which keeps the largest memory a
        process ever needed; a long-running server that sees requests of every size gives memory back."""
        import onnxruntime_genai as og

        self._og = og
        config = og.Config(str(folder))
        options: dict[str, Any] = {"intra_op_num_threads": threads} if threads else {}
        if not arena:
            options["enable_cpu_mem_arena"] = False
        if options:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        config.clear_providers()
        if genai_provider:
            config.append_provider(genai_provider)
        self.model = og.Model(config)
        self.min_capacity = sliding_window(folder)
        self.context_length = int(genai_model(folder).get("context_length") or 0)
        self.tokenizer = og.Tokenizer(self.model)
        self.adapters = og.Adapters(self.model)
        self.adapter_names = []
        for name, path in adapter_files(folder).items():
            self.adapters.load(str(path), name)
            self.adapter_names.append(name)

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of ``messages`` rendered with the package's chat template, ready for the answer."""
        text = self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        return list(self.tokenizer.encode(text))

    def generator(self, max_length: int, adapter: str | None = None, **options: Any) -> Any:
        """A greedy generator of at least ``max_length`` tokens with ``adapter`` active (None: the
        base); callers stop it themselves once they have what they asked for. Its KV cache holds at
        least the model's sliding window (Gemma 2): onnxruntime-genai 0.18 refuses a smaller one.
        Seeded although greedy decoding draws nothing: without a seed onnxruntime-genai seeds every
        new generator from 624 reads of the CPU's RDRAND, 15 ms on some virtual machines."""
        params = self._og.GeneratorParams(self.model)
        capacity = max(max_length, self.min_capacity)
        params.set_search_options(max_length=capacity, do_sample=False, random_seed=0, **options)
        generator = self._og.Generator(self.model, params)
        if adapter:
            generator.set_active_adapter(self.adapters, adapter)
        return generator

    def text(self, tokens: list[int]) -> str:
        """The text of ``tokens`` as a generation streams them, piece by piece."""
        stream = self.tokenizer.create_stream()
        return "".join(stream.decode(token) for token in tokens)

    def decode(
        self, tokens: list[int], adapter: str | None, max_new_tokens: int, sampling: Sampling = GREEDY
    ) -> Iterator[str]:
        """The text of each new token after ``tokens``, until an end-of-sequence token or
        ``max_new_tokens``; closing the iterator early stops the generation."""
        generator = self.generator(len(tokens) + max_new_tokens, adapter)
        generator.append_tokens(tokens)
        decoder = self.tokenizer.create_stream()
        stop = set(self.tokenizer.eos_token_ids)
        pick = None if sampling.greedy else sampling.picker()
        for _ in range(max_new_tokens):
            if generator.is_done():
                break
            if pick is None:
                generator.generate_next_token()
                token = generator.get_next_tokens()[0]
            else:
                token = pick(np.asarray(generator.get_logits())[0, -1])
            if token in stop:
                break
            yield decoder.decode(token)
            if pick is not None:
                generator.append_tokens([token])

    def answer_batches(
        self,
        prompts: list[list[int]],
        adapter: str | None,
        max_new_tokens: int,
        batch_size: int,
        settled: Callable[[int, str], bool] | None = None,
    ) -> Iterator[dict[int, str]]:
        """Greedy answers to the token lists ``prompts``, one batch (``equal_length_batches``) at a
        time: a dict from prompt index to answer. Decoding a batch reads the weights once for all its
        rows, about twice the answers per second of ``generate`` on the quickstart; its numbers are
        not bit for bit those of one row alone, so where two tokens tie within a logit's noise an
        answer can differ from the one ``generate`` gives. A row whose answer so far ``settled``
        (prompt index, text) accepts ends there, and the batch once all its rows have ended: the
        rows it keeps decoding get the same tokens as without it."""
        stop = set(self.tokenizer.eos_token_ids)
        for batch in equal_length_batches([len(p) for p in prompts], batch_size):
            length = len(prompts[batch[0]])
            generator = self.generator(length + max_new_tokens, adapter, batch_size=len(batch))
            generator.append_tokens(np.array([prompts[i] for i in batch], dtype=np.int32))
            streams = [self.tokenizer.create_stream() for _ in batch]
            texts: list[list[str]] = [[] for _ in batch]
            ended: set[int] = set()
            for _ in range(max_new_tokens):
                if generator.is_done() or len(ended) == len(batch):
                    break
                generator.generate_next_token()
                for row, token in enumerate(generator.get_next_tokens()):
                    if row in ended or token in stop:
                        ended.add(row)
                        continue
                    texts[row].append(streams[row].decode(token))
                    if settled is not None and settled(batch[row], "".join(texts[row])):
                        ended.add(row)
            yield {i: "".join(text) for i, text in zip(batch, texts, strict=True)}

    def stream(
        self,
        messages: list[dict[str, str]],
        adapter: str | None = None,
        max_new_tokens: int = 64,
        sampling: Sampling = GREEDY,
    ) -> Iterator[str]:
        """The answer to ``messages``, piece by piece; ``adapter`` None is the base model."""
        return self.decode(self.prompt_tokens(messages), adapter, max_new_tokens, sampling)

    def generate(self, messages: list[dict[str, str]], adapter: str | None = None, max_new_tokens: int = 64) -> str:
        """The whole greedy answer to ``messages``."""
        return "".join(self.stream(messages, adapter, max_new_tokens))
