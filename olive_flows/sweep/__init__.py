"""Hyperparameter sweeps: an Optuna study whose trials are runs of one recipe with some fields set.

space.py reads and checks the recipe's ``sweep`` block; study.py runs the trials, stores the study,
and writes the leaderboard, the report and the best recipe.
"""
