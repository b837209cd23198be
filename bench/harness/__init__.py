"""The serving benchmark's harness; `bench/run` runs `python -m harness` from `bench/`."""
