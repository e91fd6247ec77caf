"""DESIGN section 1 beyond the import-linter contract that ``make test`` runs: no module below
the face imports it, no wframe import hides inside a function, no private name is imported
from another module, and the modules form no import cycle (imports in functions counted)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "wframe"
ABOVE_THE_FACE = ("wframe.cli", "wframe.bench", "wframe.__main__")


def _name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = {_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, list[str], bool]]:
    """``(module, imported names, inside a function)`` for each ``wframe`` import of ``path``."""
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, [], in_function) for a in child.names if a.name[:6] == "wframe")
            elif isinstance(child, ast.ImportFrom) and (child.module or "")[:6] == "wframe":
                out.append((child.module, [a.name for a in child.names], in_function))
            visit(child, nested)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return out


def _targets(module: str, names: list[str]) -> list[str]:
    """The modules an import reaches (``from wframe.saving import io``: wframe.saving.io)."""
    found = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
    return found if found and len(found) == len(names) else [module, *found]


def _below_the_face(name: str) -> bool:
    return name != "wframe" and not name.startswith(ABOVE_THE_FACE)


def test_modules_import_at_module_level_and_never_the_face():
    bad = []
    for name in filter(_below_the_face, MODULES):
        for module, names, in_function in _imports(MODULES[name]):
            if in_function:
                bad.append(f"{name} imports {module} inside a function")
            if "wframe" in _targets(module, names):
                bad.append(f"{name} imports the face (wframe), which is above it")
    assert not bad, "\n".join(bad)


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for name, path in MODULES.items():
        for module, names, _ in _imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                bad.append(f"{name} imports {private} from {module}")
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    graph = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for module, names, _ in _imports(path):
            for target in _targets(module, names):
                # A package's __init__ re-exporting its own submodules is no cycle.
                if target != name and not (target == package or name == package):
                    graph[name].add(target)

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return path
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [c for c in map(cycle_from, graph) if c]
    assert not cycles, f"import cycle: {' -> '.join(cycles[0])}"
