"""Step 1: read a recipe (YAML with line numbers, command-line overrides) into a Recipe."""
