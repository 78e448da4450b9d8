"""Olive 0.13's ModelBuilder pass on the builder of today's onnxruntime-genai (0.15 to 0.18).

Olive 0.13 calls the builder the way onnxruntime-genai 0.14 took it, and newer builders break
three ways (measured, see ../shared/notes/olive-stack.md):

- ``create_model`` needs the options prepared by ``parse_extra_options`` (0.15 on: "Hugging Face
  details not found in extra_options");
- Olive's patch of the builder imports ``onnxruntime_genai.models.quantized_model``, which moved
  in 0.16; it serves pre-quantized checkpoints (olive-flows exports float ones) and keeps the
  embedding a float table, which ``shared_embeddings=false`` does from 0.15 on;
- from 0.16 the builder silently ignores the ``int4_`` spellings of its quantization options
  (``int4_nodes_to_exclude`` and the rest): the LoRA MatMuls got quantized and the base model
  failed with no adapter active.

This pass is Olive's, with the builder call adapted: the options Olive collects are handed to
``parse_extra_options`` as the builder's own command line would give them, with the ``int4_``
prefix dropped where the builder no longer reads it. ``shared_embeddings`` is set to false unless
a recipe asks otherwise, so a tied embedding stays the float table the 0.14 builder wrote
(from 0.15 the builder follows ``tie_word_embeddings``). With onnxruntime-genai 0.14 the builder
is called as Olive calls it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from olive.passes.onnx.model_builder import ModelBuilder
from packaging import version

PREPARED_FROM = version.Version("0.15")  # create_model needs parse_extra_options' output
UNPREFIXED_FROM = version.Version("0.16")  # the builder reads nodes_to_exclude, not int4_nodes_to_exclude
INT4_PREFIX = "int4_"
DEFAULTS = {"shared_embeddings": False}


def builder_options(options: dict[str, Any], builder_version: str) -> list[str]:
    """Olive's builder options as the builder's ``KEY=VALUE`` command-line options."""
    unprefixed = version.Version(builder_version).release >= UNPREFIXED_FROM.release
    found = []
    for key, value in {**DEFAULTS, **options}.items():
        if unprefixed and key.startswith(INT4_PREFIX):
            key = key.removeprefix(INT4_PREFIX)
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, (list, tuple)):
            value = ("/" if key.endswith("op_types_to_quantize") else ",").join(map(str, value))
        found.append(f"{key}={value}")
    return found


def flat_gemma3_rope(config: Any) -> None:
    """Give a Gemma 3 config the RoPE attributes the builder reads.

    transformers 5 nests Gemma 3's RoPE per layer type (``rope_parameters: {full_attention: {...},
    sliding_attention: {...}}``) and drops ``rope_theta`` and ``rope_local_base_freq``; the 0.18
    builder reads the flat form (``KeyError: 'rope_type'``). Global layers take the full-attention
    parameters, sliding layers the local base frequency, as transformers 4 configs spelled them.
    """
    nested = getattr(config, "rope_parameters", None)
    if not (isinstance(nested, dict) and "full_attention" in nested):
        return
    config.rope_parameters = dict(nested["full_attention"])
    config.rope_theta = nested["full_attention"]["rope_theta"]
    config.rope_local_base_freq = nested.get("sliding_attention", nested["full_attention"])["rope_theta"]


@contextlib.contextmanager
def gemma3_rope_read():
    """While the builder runs, its Gemma 3 model reads a config flattened by ``flat_gemma3_rope``."""
    from onnxruntime_genai.models import builder

    Gemma3Model = builder.Gemma3Model  # the builder imports its model classes as a top-level package
    original = Gemma3Model.__init__

    def init(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        flat_gemma3_rope(config)
        original(self, config, *args, **kwargs)

    Gemma3Model.__init__ = init
    try:
        yield
    finally:
        Gemma3Model.__init__ = original


class OliveFlowsModelBuilder(ModelBuilder):
    """Olive's ModelBuilder, calling onnxruntime-genai 0.15 to 0.18's builder the way it takes options."""

    @staticmethod
    def maybe_patch_quant() -> None:
        """Olive's patch of the builder (pre-quantized checkpoints, and an embedding kept float) where
        its module exists; from onnxruntime-genai 0.16 that module moved, and ``shared_embeddings=false``
        keeps the embedding float instead (olive-flows hands the builder float checkpoints only)."""
        with contextlib.suppress(ModuleNotFoundError):
            ModelBuilder.maybe_patch_quant()

    def _run_for_config(self, model: Any, config: Any, output_model_path: str) -> Any:
        from onnxruntime_genai import __version__ as genai_version
        from onnxruntime_genai.models import builder

        if version.Version(genai_version).release < PREPARED_FROM.release:  # the call Olive was written for
            return super()._run_for_config(model, config, output_model_path)
        original = builder.create_model

        def create_model(model_name, input_path, output_dir, precision, execution_provider, cache_dir, **options):
            """Olive's call, through ``parse_extra_options`` as the builder's own command line goes."""
            prepared = builder.parse_extra_options(
                model_name,
                input_path,
                output_dir,
                precision,
                execution_provider,
                cache_dir,
                builder_options(options, genai_version),
            )
            original(model_name, input_path, output_dir, precision, execution_provider, cache_dir, **prepared)

        builder.create_model = create_model  # Olive imports it from the module inside its call
        try:
            with gemma3_rope_read():
                return super()._run_for_config(model, config, output_model_path)
        finally:
            builder.create_model = original
