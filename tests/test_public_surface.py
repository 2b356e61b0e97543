"""Every module that another module imports from has an ``__all__``, and it lists every public name
imported from it anywhere in the repository (tests and benchmarks included): the surface a module
offers is written down in one place, as httpx and aiomqtt pin theirs."""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("twin", "contracts", "bridges")


def _sources() -> list[Path]:
    files = []
    for folder in (*PACKAGES, "tests", "bench"):
        files += [p for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts]
    return [*files, ROOT / "conftest.py"]


def _imported_names() -> dict[str, set[str]]:
    """module -> public names other modules import from it with ``from module import ...``."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for path in _sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] not in PACKAGES:
                    continue
                for alias in node.names:
                    if not alias.name.startswith("_") and alias.name != "*":
                        wanted[node.module].add(alias.name)
    return wanted


def test_every_imported_name_is_in_its_modules_all() -> None:
    missing: list[str] = []
    for module_name, imported in sorted(_imported_names().items()):
        module = importlib.import_module(module_name)
        submodules = (
            {n for n in imported if importlib.util.find_spec(f"{module_name}.{n}") is not None}
            if hasattr(module, "__path__")
            else set()
        )
        names = imported - submodules  # ``from bridges.okai import simulator`` names a module, not a member
        if not names:
            continue
        public = getattr(module, "__all__", None)
        if public is None:
            missing.append(f"{module_name} has no __all__ (imported: {', '.join(sorted(names))})")
            continue
        for name in sorted(names - set(public)):
            missing.append(f"{module_name}.{name} is imported elsewhere but not in its __all__")
    assert not missing, "\n".join(missing)


def test_every_all_names_something_that_exists() -> None:
    wrong: list[str] = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "tests" in path.parts or "__main__" in path.name:
                continue
            module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            module = importlib.import_module(module_name)
            for name in getattr(module, "__all__", ()):
                if not hasattr(module, name):
                    wrong.append(f"{module_name}.__all__ names {name}, which it does not define")
    assert not wrong, "\n".join(wrong)
