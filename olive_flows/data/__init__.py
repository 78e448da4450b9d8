"""Training data: row formats, checks and deterministic train/held-out splits."""
