"""The rooms keep their shape: imports point one way, no import circle, SQL only under
``storage/``, no literal protocol code outside the vocabulary, modules stay small, and
``docs/architecture.md`` names only files that exist (docs/architecture.md explains each rule)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("transport", "actors", "storage", "config")  # each may import only those after it
PACKAGES = (*LAYERS, "bench")
MAX_LINES = 410


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = f
    return out


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (never imported)."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
            else:
                todo.append(child)
    return out


def _imports(path: Path) -> set[str]:
    """Every absolute module a file imports at run time, at top level or inside a function."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_imports_point_one_way() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for name, path in _modules().items():
        top = name.split(".")[0]
        if top not in rank:
            continue
        for dep in _imports(path):
            dep_top = dep.split(".")[0]
            if dep_top in rank and rank[dep_top] < rank[top]:
                upward.append(f"{name} imports {dep}")
    assert upward == []


def test_no_import_circle() -> None:
    modules = _modules()
    graph = {name: {d for d in _imports(path) if d in modules and d != name} for name, path in modules.items()}
    # A package imports its own submodules to expose them; that is not a circle.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not d.startswith(name + ".")}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_modules_stay_small() -> None:
    big = {
        str(f.relative_to(ROOT)): n
        for pkg in ("actors", "transport", "storage")
        for f in (ROOT / pkg).rglob("*.py")
        if (n := len(f.read_text().splitlines())) > MAX_LINES
    }
    assert big == {}


_SQL = re.compile(r"""["'](\s*)(SELECT\s|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|COPY\s+\w+|CREATE\s+(TABLE|INDEX))""", re.I)


def test_sql_only_under_storage() -> None:
    outside = [
        f"{f.relative_to(ROOT)}:{i}"
        for pkg in ("actors", "transport", "config", "bench")
        for f in (ROOT / pkg).rglob("*.py")
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if _SQL.search(line)
    ]
    assert outside == []


_CLOSE_CALL = re.compile(r"\b(close|fail|close_with|Kick)\(\s*\d{4}\b")
_CODE_STRING = re.compile(r"""\b(code|reason)\s*=\s*["'][a-z_]+["']""")


def test_no_literal_protocol_codes_outside_the_vocabulary() -> None:
    found = [
        f"{f.relative_to(ROOT)}:{i}: {line.strip()}"
        for pkg in ("actors", "transport")
        for f in (ROOT / pkg).rglob("*.py")
        if f.name != "vocabulary.py"
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if _CLOSE_CALL.search(line) or _CODE_STRING.search(line)
    ]
    assert found == []


def test_architecture_doc_names_only_files_that_exist() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:actors|transport|storage|config|webclient|bench)/[\w./]+\.(?:py|js|sql|toml))`", doc))
    assert len(named) >= 10, "the doc lists the files of the action path"
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert missing == []
