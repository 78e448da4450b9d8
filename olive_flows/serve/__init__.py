"""``olive-flows serve``: a package behind an OpenAI-compatible HTTP API, one adapter per request."""
