"""Hugging Face hub models, resolved to a snapshot folder on disk before Olive sees them.

Olive keys its cache on a hub model's commit and asks the hub for it (``repo_info``) even when
the model is in the local cache, so a cached model could not be fine-tuned offline. olive-flows
downloads the snapshot itself (or finds it in the cache), and hands Olive the snapshot folder, a
plain local model; the commit goes into the manifest. When the model cannot be had, the run stops
before any work with one line that says which model, why, and the ways out.
"""

from __future__ import annotations

import os
from pathlib import Path

# Files a model's snapshot needs for training and export: configs, tokenizers, weights, remote code.
# Other formats in the same repository (ONNX, GGUF, Flax, TensorFlow, original checkpoints) are skipped.
SKIPPED = ["*.onnx", "*.onnx_data", "*.onnx.data", "*.gguf", "*.msgpack", "*.h5", "*.ot", "original/*", "onnx/*"]
WAYS_OUT = (
    "run once with network access (it is then cached under {cache}), copy a Hugging Face cache that "
    "holds it there (or point HF_HUB_CACHE at one), or {local}"
)


class ModelUnavailable(Exception):
    """The base model cannot be downloaded or found in the cache; the CLI exits with code 7."""

    exit_code = 7


def hub_offline() -> bool:
    """Whether the Hugging Face libraries are told to stay offline (read now, not at import time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


# What is fetched: the base model, or an adapter trained elsewhere; and where a local copy is named instead.
MODEL = ("model", "set model.id to a local model folder")


def unavailable(model_id: str, why: str, what: tuple[str, str] = MODEL) -> ModelUnavailable:
    from huggingface_hub import constants

    return ModelUnavailable(
        f"{what[0]} {model_id} cannot be downloaded: {why}; {WAYS_OUT.format(cache=constants.HF_HUB_CACHE, local=what[1])}"
    )


def cached_snapshot(model_id: str, revision: str | None) -> Path | None:
    """The snapshot folder of ``model_id`` at ``revision`` (a branch, tag or commit; None: main) in
    the local Hugging Face cache, or None when the cache does not have it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError):
        return None


def snapshot(
    model_id: str, revision: str | None, only: list[str] | None = None, what: tuple[str, str] = MODEL
) -> tuple[Path, str]:
    """The snapshot folder of a hub model and its commit: from the cache when offline, else downloaded
    (only what changed since the cached snapshot; ``only`` these files when given). Raises
    ModelUnavailable with the reason."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if hub_offline():
        folder = cached_snapshot(model_id, revision)
        if folder is None:
            at = f" at revision {revision}" if revision else ""
            raise unavailable(
                model_id, f"it is not in the Hugging Face cache{at} and the hub is off (offline mode)", what
            )
        return folder, folder.name
    try:
        folder = Path(
            snapshot_download(
                model_id, revision=revision, allow_patterns=only, ignore_patterns=None if only else SKIPPED
            )
        )
    except GatedRepoError:
        raise unavailable(
            model_id,
            "it is gated: accept its license on its hub page, then set HF_TOKEN to a token of that account",
            what,
        ) from None
    except RevisionNotFoundError:
        raise unavailable(model_id, f"it has no revision '{revision}'", what) from None
    except RepositoryNotFoundError:
        raise unavailable(model_id, f"no such {what[0]} on the hub (or it is private: set HF_TOKEN)", what) from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        reason = str(exc).splitlines()[0].removeprefix("Got: ")
        raise unavailable(
            model_id, f"the hub cannot be reached and the cache does not have it ({reason})", what
        ) from None
    return folder, folder.name
