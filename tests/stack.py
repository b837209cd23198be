"""The project of the bundled Compose stack (`deploy/compose/project`), made afresh: the demo
project, with its data arriving in S3 from the stack's feeder."""

from __future__ import annotations

from pathlib import Path

from refit.examples import INCOMING
from refit.run.demo import create_demo_project
from refit.spec import SPEC_FILE

STACK_SOURCE = "s3://refit/incoming/"
"""Where the Compose stack's feeder drops its batches and its scheduler ingests them."""


def create_stack_project(root: Path) -> Path:
    """The demo project of the bundled Compose stack: its data arrives in S3, from the feeder."""
    create_demo_project(root, ingest="5s", train="10s")
    path = root / SPEC_FILE
    text = path.read_text()
    path.write_text(text.replace(f"path: {INCOMING}\n", f"path: {STACK_SOURCE}\n", 1))
    for batch in (root / INCOMING).iterdir():
        batch.unlink()
    (root / INCOMING).rmdir()
    (root / INCOMING.parent).rmdir()
    return root
