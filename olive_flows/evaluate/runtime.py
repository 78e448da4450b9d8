"""Load a package with onnxruntime-genai and generate with the base model or any of its adapters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from olive_flows.layout import adapter_files


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


def sliding_window(folder: Path) -> int:
    """The KV cache a generator of the package in ``folder`` needs at least: its sliding window (from
    genai_config.json; 0 when it has none), within the model's context length."""
    model = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"]
    window = int((model["decoder"].get("sliding_window") or {}).get("window_size", 0))
    return min(window, model.get("context_length") or window)


class PackageRuntime:
    """A package loaded once, with every adapter in its adapters/ folder loaded by file name."""

    def __init__(self, folder: Path, genai_provider: str | None = None, threads: int | None = None):
        """``threads``: onnxruntime's intra-op threads, for timing engines side by side at equal thread
        counts. None keeps onnxruntime-genai's default (half the logical CPUs, at most 16), as a
        deployed package without ``intra_op_num_threads`` in its genai_config.json gets."""
        import onnxruntime_genai as og

        self._og = og
        config = og.Config(str(folder))
        if threads:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        config.clear_providers()
        if genai_provider:
            config.append_provider(genai_provider)
        self.model = og.Model(config)
        self.min_capacity = sliding_window(folder)
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
        """A greedy generator of at least ``max_length`` tokens with ``adapter`` active (None: the base);
        callers stop it themselves once they have what they asked for. Its KV cache holds at least the
        model's sliding window (Gemma 2): onnxruntime-genai 0.18 refuses a smaller one. Seeded although
        greedy decoding draws nothing: without a seed onnxruntime-genai seeds every new generator from
        624 reads of the CPU's RDRAND, 15 ms on some virtual machines."""
        params = self._og.GeneratorParams(self.model)
        capacity = max(max_length, self.min_capacity)
        params.set_search_options(max_length=capacity, do_sample=False, random_seed=0, **options)
        generator = self._og.Generator(self.model, params)
        if adapter:
            generator.set_active_adapter(self.adapters, adapter)
        return generator

    def stream(
        self, messages: list[dict[str, str]], adapter: str | None = None, max_new_tokens: int = 64
    ) -> Iterator[str]:
        """Greedy generation, yielding decoded text piece by piece; ``adapter`` None is the base model."""
        tokens = self.prompt_tokens(messages)
        generator = self.generator(len(tokens) + max_new_tokens, adapter)
        generator.append_tokens(tokens)
        decoder = self.tokenizer.create_stream()
        stop = set(self.tokenizer.eos_token_ids)
        for _ in range(max_new_tokens):
            if generator.is_done():
                break
            generator.generate_next_token()
            token = generator.get_next_tokens()[0]
            if token in stop:
                break
            yield decoder.decode(token)

    def generate(self, messages: list[dict[str, str]], adapter: str | None = None, max_new_tokens: int = 64) -> str:
        """The whole greedy answer to ``messages``."""
        return "".join(self.stream(messages, adapter, max_new_tokens))
