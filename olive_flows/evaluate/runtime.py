"""Load a package with onnxruntime-genai and generate with the base model or any of its adapters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

ADAPTER_DIR = "adapters"
ADAPTER_SUFFIX = ".onnx_adapter"


def provider_available(genai_provider: str | None) -> bool:
    """Whether this onnxruntime-genai build and machine can run ``genai_provider`` (None: CPU)."""
    if genai_provider is None:
        return True
    import onnxruntime_genai as og

    check = getattr(og, f"is_{genai_provider}_available", None)
    return bool(check and check())


def open_package(folder: Path, genai_provider: str | None) -> tuple[PackageRuntime, str | None]:
    """``folder`` loaded on its own provider where this machine can run it, else on CPU, with the
    reason it is not on its own provider (None when it is).

    onnxruntime-genai reports a provider available when its plugin file is installed; the CUDA
    libraries that plugin links (onnxruntime-genai-cuda 0.14 links CUDA 12) are only found when the
    model loads, so a load that fails with "interface not available" is this machine's gap, not
    the package's."""
    if not provider_available(genai_provider):
        return PackageRuntime(folder), f"the {genai_provider} provider is not available here"
    try:
        return PackageRuntime(folder, genai_provider), None
    except RuntimeError as exc:
        if "interface not available" not in str(exc):
            raise
        return PackageRuntime(folder), f"the {genai_provider} provider failed to load here: {exc}"


class PackageRuntime:
    """A package loaded once, with every adapter in its adapters/ folder loaded by file name."""

    def __init__(self, folder: Path, genai_provider: str | None = None):
        import onnxruntime_genai as og

        self._og = og
        config = og.Config(str(folder))
        config.clear_providers()
        if genai_provider:
            config.append_provider(genai_provider)
        self.model = og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)
        self.adapters = og.Adapters(self.model)
        self.adapter_names = []
        for path in sorted((folder / ADAPTER_DIR).glob(f"*{ADAPTER_SUFFIX}")):
            name = path.name.removesuffix(ADAPTER_SUFFIX)
            self.adapters.load(str(path), name)
            self.adapter_names.append(name)

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of ``messages`` rendered with the package's chat template, ready for the answer."""
        text = self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        return list(self.tokenizer.encode(text))

    def stream(
        self, messages: list[dict[str, str]], adapter: str | None = None, max_new_tokens: int = 64
    ) -> Iterator[str]:
        """Greedy generation, yielding decoded text piece by piece; ``adapter`` None is the base model."""
        tokens = self.prompt_tokens(messages)
        params = self._og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(tokens) + max_new_tokens, do_sample=False)
        generator = self._og.Generator(self.model, params)
        if adapter:
            generator.set_active_adapter(self.adapters, adapter)
        generator.append_tokens(tokens)
        decoder = self.tokenizer.create_stream()
        stop = set(self.tokenizer.eos_token_ids)
        while not generator.is_done():
            generator.generate_next_token()
            token = generator.get_next_tokens()[0]
            if token in stop:
                break
            yield decoder.decode(token)

    def generate(self, messages: list[dict[str, str]], adapter: str | None = None, max_new_tokens: int = 64) -> str:
        """The whole greedy answer to ``messages``."""
        return "".join(self.stream(messages, adapter, max_new_tokens))
