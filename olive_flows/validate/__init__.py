"""Step 2: validate a recipe: JSON Schema, cross-field rules, and problems that point at a line."""
