"""The package's layout as DESIGN.md draws it: roles (ingest in `refit.data`, `train`, `serve`,
`monitor`, `run`) share nothing but the core modules, and the core imports no role."""

from __future__ import annotations

import ast
from pathlib import Path

import refit

PACKAGE = Path(refit.__file__).parent
ROLES = {"data", "train", "serve", "monitor", "run"}
COMPOSERS = {"cli", "__main__"}
"""What composes the roles into commands, and so may import any of them."""


def part_of(module: str) -> str:
    """The top-level part of refit that a dotted module name belongs to."""
    return module.split(".")[1] if module.count(".") else ""


def imported(path: Path) -> set[str]:
    """Every refit module `path` imports, at its top or inside a function, absolute or relative."""
    name = "refit." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.update([module] if node.module else (f"{module}.{a.name}" for a in node.names))
    return {module for module in found if module.startswith("refit.")}


def test_imports_are_resolved_with_their_package() -> None:
    assert imported(PACKAGE / "data" / "ingest.py") >= {"refit.data.batches", "refit.parquet"}
    assert part_of("refit.data.batches") == "data" and part_of("refit.spec") == "spec"


def test_no_role_imports_another_and_the_core_imports_no_role() -> None:
    crossings = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if own in COMPOSERS:
            continue
        for module in sorted(imported(path)):
            other = part_of(module)
            if other == own:
                continue
            if other in COMPOSERS or (other in ROLES and own in ROLES):
                crossings.append(f"{path.relative_to(PACKAGE)} ({own}) imports {module}")
            elif other in ROLES:
                crossings.append(f"{path.relative_to(PACKAGE)} (core) imports {module}")
    assert not crossings, "\n".join(crossings)


def test_no_module_of_the_registry_ingest_train_or_run_is_past_400_lines() -> None:
    # A module that long usually holds two concepts (STYLE.md); migrations are generated.
    long = [
        f"{path.relative_to(PACKAGE)}: {lines} lines"
        for package in ("registry", "data", "train", "run")
        for path in sorted((PACKAGE / package).rglob("*.py"))
        if "migrations" not in path.parts
        and (lines := len(path.read_text(encoding="utf-8").splitlines())) > 400
    ]
    assert not long, "\n".join(long)
