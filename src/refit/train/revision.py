"""The code revision a version records: the project's git commit, if it is a git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_revision(root: Path) -> str | None:
    """The git commit of the project (with `-dirty` for local changes), if it is a git repo."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
