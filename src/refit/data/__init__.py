"""The data layer: sources, validation, column statistics and snapshot helpers."""
