"""The smoke check every run ends with: the base model and every adapter must generate."""

from __future__ import annotations

from olive_flows.evaluate.runtime import PackageRuntime


class PackageCheckFailed(Exception):
    """The package failed a check (generation, parity when enforced); the CLI exits with code 4."""

    exit_code = 4


def smoke_check(runtime: PackageRuntime, prompt: str, max_new_tokens: int) -> dict[str, str]:
    """Generate for ``prompt`` with no adapter and with each adapter; raise on any error."""
    texts = {}
    messages = [{"role": "user", "content": prompt}]
    for adapter in [None, *runtime.adapter_names]:
        label = adapter or "(base)"
        try:
            texts[label] = runtime.generate(messages, adapter, max_new_tokens)
        except Exception as exc:  # onnxruntime-genai raises plain RuntimeErrors
            raise PackageCheckFailed(f"generation with {label} failed: {exc}") from exc
    return texts
