"""The project's own code, versioned with a model: bundled at training, loaded privately to serve.

    bundle = bundle_code(root, ["hooks:features", "hooks:postprocess"])   # a zip, as bytes
    code = LoadedCode(bundle.data, "churn v3")
    features = code.function("hooks:features")

`bundle_code` collects the project modules that a version's hooks (`model.features`,
`model.postprocess`) and a `python` model's function live in: a module file (`hooks.py`) or a
whole top-level package (`mypkg/`, every `.py` file in it, so relative imports work), and the
project modules those import in turn. A module that is not a file of the project folder (an
installed library) is refused: it is not the project's code and would not travel with the
version. The zip is deterministic, so the same code makes the same artifact.

`LoadedCode` imports a bundle from memory under a package name of its own
(`_refit_code_<random>.hooks`), so two versions with different code run side by side in one
server, and neither ever reads the project's files on the server's disk. `import` statements of
the bundle's own modules inside it resolve within the bundle (`importlib.import_module` calls in
the user's code do not). Load a bundle only after its sha256 is checked.
"""

from __future__ import annotations

import ast
import builtins
import importlib.abc
import importlib.machinery
import importlib.util
import io
import linecache
import sys
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from refit.errors import ArtifactError, CodeError, SpecError

CODE_PREFIX = "_refit_code_"
"""The start of every private package name a loaded bundle's modules live under."""
MAX_FILES = 2000
MAX_BYTES = 50 * 1024 * 1024
_STAMP = (1980, 1, 1, 0, 0, 0)  # every entry's time: the same code makes the same zip


@dataclass(frozen=True)
class Bundle:
    """A project's code as one artifact: the zip's bytes and the top-level modules it holds."""

    data: bytes
    modules: list[str]
    files: list[str]


def bundle_code(
    root: Path, entries: Mapping[str, str], optional: Mapping[str, str] | None = None
) -> Bundle:
    """The zip of the project modules that `entries` (field -> `module:function`, e.g.
    `{"model.features": "hooks:features"}`) live in, with the project modules they import;
    `optional` entries are bundled too when their module is the project's.

    A `SpecError` names the field whose module is not a file of the project folder `root`."""
    root = root.resolve()
    files: dict[str, Path] = {}
    modules: list[str] = []
    pending: list[tuple[str, str]] = []
    for field, path in {**(optional or {}), **entries}.items():
        top = path.partition(":")[0].partition(".")[0]
        if _location(root, top) is None:
            if field not in entries:
                continue
            raise SpecError(
                f"{field}: got {path!r}: module {top} is not a file of the project folder "
                f"{root}: it must be the project's own code ({top}.py or a package {top}/ "
                "there), which is stored with each version; an installed library is not"
            )
        pending.append((field, top))
    while pending:
        field, top = pending.pop()
        if top in modules:
            continue
        location = _location(root, top)
        if location is None:
            continue
        modules.append(top)
        found = [location] if location.is_file() else sorted(_package_files(location))
        for file in found:
            key = file.relative_to(root).as_posix()
            files[key] = file
            if len(files) > MAX_FILES:
                raise SpecError(f"{field}: its package {top} holds over {MAX_FILES} files")
            pending.extend((field, name) for name in _imported(file) if name not in modules)
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(files):
            source = files[key].read_bytes()
            total += len(source)
            if total > MAX_BYTES:
                raise SpecError(f"the project's code to store is over {MAX_BYTES >> 20} MB")
            info = zipfile.ZipInfo(key, date_time=_STAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, source)
    return Bundle(buffer.getvalue(), sorted(modules), sorted(files))


def _location(root: Path, top: str) -> Path | None:
    """`root/top.py`, or the package folder `root/top/`, when it is inside `root`."""
    for candidate in (root / f"{top}.py", root / top):
        is_module = candidate.is_file() or (candidate.is_dir() and any(candidate.glob("*.py")))
        if is_module and candidate.resolve().is_relative_to(root):
            return candidate
    return None


def _package_files(folder: Path) -> Iterable[Path]:
    for file in folder.rglob("*.py"):
        if "__pycache__" not in file.parts:
            yield file


def _imported(file: Path) -> set[str]:
    """The top-level names of the absolute imports in a module file."""
    try:
        tree = ast.parse(file.read_bytes(), str(file))
    except SyntaxError as exc:
        raise SpecError(f"the project module {file.name} does not parse: {exc}") from None
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.partition(".")[0])
    return names


class LoadedCode:
    """A bundle's modules, imported from memory under a private package name (`package`).

    `where` names the version in errors and tracebacks (`churn v3`)."""

    def __init__(self, data: bytes, where: str) -> None:
        self.where = where
        self.package = f"{CODE_PREFIX}{uuid.uuid4().hex}"
        self._sources: dict[str, tuple[str, bytes, bool]] = {}
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for name in archive.namelist():
                    parts = PurePosixPath(name)
                    if parts.suffix != ".py" or ".." in parts.parts or parts.is_absolute():
                        continue
                    package = parts.name == "__init__.py"
                    dotted = ".".join(
                        parts.parent.parts if package else parts.with_suffix("").parts
                    )
                    self._sources[dotted] = (name, archive.read(name), package)
        except (zipfile.BadZipFile, OSError, KeyError) as exc:
            raise ArtifactError(f"{where}'s code artifact is not a readable zip: {exc}") from None
        for dotted in list(self._sources):  # a folder of modules with no __init__.py
            names = dotted.split(".")
            for depth in range(1, len(names)):
                self._sources.setdefault(".".join(names[:depth]), ("", b"", True))
        self.modules = frozenset(name.partition(".")[0] for name in self._sources)
        self._builtins = {**vars(builtins), "__import__": self._import}
        root = ModuleType(self.package, f"the code of {where}")
        root.__path__ = []
        root.__package__ = self.package
        sys.modules[self.package] = root
        sys.meta_path.insert(0, _Finder(self))

    def holds(self, module: str) -> bool:
        """Whether `module` (as the project names it, `hooks` or `pkg.sub`) is in the bundle."""
        return module.partition(".")[0] in self.modules

    def module(self, name: str) -> ModuleType:
        """The bundle's module `name` (`hooks`, `pkg.sub`), imported on first use."""
        if not self.holds(name):
            raise CodeError(f"{self.where}'s code holds no module {name}")
        return importlib.import_module(f"{self.package}.{name}")

    def function(self, path: str) -> Callable[..., Any]:
        """The function at `module:function` in the bundle."""
        module_name, _, name = path.partition(":")
        try:
            module = self.module(module_name)
        except CodeError:
            raise
        except Exception as exc:
            raise CodeError(
                f"importing {module_name} of {self.where}'s code raised {type(exc).__name__}: {exc}"
            ) from exc
        function = getattr(module, name, None)
        if not callable(function):
            raise CodeError(f"{self.where}'s code has no function {name} in {module_name}")
        return function  # type: ignore[no-any-return]

    def resolve(self, module: str, qualname: str) -> Any:
        """The object `module.qualname` from the bundle (as a pickle names a class)."""
        value: Any = self.module(module)
        for part in qualname.split("."):
            value = getattr(value, part)
        return value

    def _import(
        self,
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: Sequence[str] = (),
        level: int = 0,
    ) -> ModuleType:
        # The bundle's own modules, imported by their project names, come from the bundle.
        if level == 0 and name.partition(".")[0] in self.modules:
            module = builtins.__import__(f"{self.package}.{name}", globals, locals, fromlist, 0)
            return module if fromlist else sys.modules[f"{self.package}.{name.partition('.')[0]}"]
        return builtins.__import__(name, globals, locals, fromlist, level)

    def _spec(self, fullname: str) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(self.package + "."):
            return None
        relative = fullname[len(self.package) + 1 :]
        if relative not in self._sources:
            return None
        _, _, package = self._sources[relative]
        return importlib.util.spec_from_loader(fullname, _Loader(self), is_package=package)

    def _exec(self, module: ModuleType) -> None:
        relative = module.__name__[len(self.package) + 1 :]
        file, source, _ = self._sources[relative]
        filename = f"<{self.where}>/{file or relative.replace('.', '/')}"
        module.__file__ = filename
        module.__dict__["__builtins__"] = self._builtins
        text = source.decode("utf-8")
        # Tracebacks show the version's lines, never those of a file on the server's disk.
        linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
        exec(compile(text, filename, "exec"), module.__dict__)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, code: LoadedCode) -> None:
        self.code = code

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        return self.code._spec(fullname)


class _Loader(importlib.abc.Loader):
    def __init__(self, code: LoadedCode) -> None:
        self.code = code

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        self.code._exec(module)


def load_code(
    record: Mapping[str, Any], fetch: Callable[[str, str], bytes], where: str
) -> LoadedCode:
    """A version's code (`ModelVersionRow.code`), fetched with its sha256 checked, loaded."""
    return LoadedCode(fetch(str(record["uri"]), str(record["sha256"])), where)
