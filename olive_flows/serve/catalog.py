"""Model ids a package is served under: the base as ``<recipe>``, each adapter as ``<recipe>:<adapter>``
(or its bare name), as vLLM and llama.cpp's server name LoRA adapters beside their base."""

from __future__ import annotations

from dataclasses import dataclass

from olive_flows.serve.errors import ApiError


@dataclass(frozen=True)
class Catalog:
    """The ids of one package: ``name`` is the recipe's, ``adapters`` the package's adapter names."""

    name: str
    adapters: tuple[str, ...]

    @property
    def ids(self) -> list[str]:
        return [self.name, *(f"{self.name}:{adapter}" for adapter in self.adapters)]

    def adapter_of(self, model: str) -> str | None:
        """The adapter a request's ``model`` names (None: the base model); an unknown id is a 404."""
        if model == self.name:
            return None
        prefix, _, adapter = model.rpartition(":")
        if adapter in self.adapters and prefix in ("", self.name):
            return adapter
        raise ApiError(
            404,
            f"The model '{model}' does not exist; this server has: {', '.join(self.ids)}"
            f" (an adapter may also be named bare: {', '.join(self.adapters) or 'none'})",
            param="model",
            code="model_not_found",
        )

    def id_of(self, adapter: str | None) -> str:
        return self.name if adapter is None else f"{self.name}:{adapter}"
