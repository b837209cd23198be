"""refit: keep machine-learning models fresh in production."""

__version__ = "0.1.0"
