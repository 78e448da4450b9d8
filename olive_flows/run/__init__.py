"""Step 4: run the compiled workflows with Olive, and the whole pipeline of a recipe."""
