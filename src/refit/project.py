"""A project: its folder and its spec, read from `refit.yaml`.

Loading a spec reads the file, applies environment overrides (`REFIT_` prefix, `__` between
nested fields: `REFIT_STORAGE__METADATA_URL=postgresql+psycopg://...`), and validates the
result. Every problem is reported with the file, the field path, the value received and what
was expected, as a `SpecError`; nothing runs on a bad spec.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from refit._spec_problems import apply_env, describe, kind_of
from refit.errors import SpecError
from refit.spec import SPEC_FILE, Spec


@dataclass(frozen=True)
class Project:
    """A spec and the folder it lives in; relative paths in the spec resolve against it."""

    root: Path
    spec: Spec

    def path(self, value: str | Path) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def metadata_url(self) -> str:
        url = self.spec.storage.metadata_url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.path(url[len(prefix) :]))
        return url

    @property
    def artifacts_url(self) -> str:
        url = self.spec.storage.artifacts_url
        return url if "://" in url else str(self.path(url))


def load_project(root: str | Path = ".", environ: Mapping[str, str] | None = None) -> Project:
    """Read `refit.yaml` in `root`, apply `REFIT_*` overrides and validate it."""
    root = Path(root).resolve()
    path = root / SPEC_FILE
    if not path.is_file():
        raise SpecError(
            f"No {SPEC_FILE} in {root}. Create a project with `refit init DIR` "
            "or point at one with --project DIR."
        )
    return Project(root, load_spec(path, os.environ if environ is None else environ))


def load_spec(path: Path, environ: Mapping[str, str]) -> Spec:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{path}: not valid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of fields at the top, got {kind_of(raw)}")
    overridden = apply_env(raw, environ, set(Spec.model_fields))
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        problems = [describe(err, overridden) for err in exc.errors()]
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        raise SpecError(f"{path}: {len(problems)} {noun}:\n{lines}", problems) from None
