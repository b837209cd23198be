"""The training run: split a snapshot, fit a model, evaluate it, describe it, gate it."""
