"""The range of seeds: one rule for the CLI, a training run and a search file."""

# NumPy, scikit-learn and Optuna take seeds below 2**32; a search derives seed + fold.
MAX_SEED = 2**31 - 1
