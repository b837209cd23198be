"""A test project's `refit.yaml` changed field by field, whatever the file already holds (a
text replacement would add a second `monitor:` key to a spec that has one, and YAML keeps the
last)."""

from __future__ import annotations

from pathlib import Path

import yaml

from refit.spec import SPEC_FILE


def set_schedule(root: Path, **fields: object) -> None:
    """Set `schedule.FIELD` of the project in `root` for each of `fields` (None: null)."""
    path = root / SPEC_FILE
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec.setdefault("schedule", {}).update(fields)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
