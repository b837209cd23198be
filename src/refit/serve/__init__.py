"""The inference server: `refit serve`."""
