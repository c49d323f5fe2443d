"""The layout's rules, read from the code's own imports: the gateway never imports the report or the
bench, only gateway/http/ speaks FastAPI, no import cycles, no module past about 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "experiments", "models")
WEB = ("fastapi", "starlette")
MAX_LINES = 400


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported(path: Path) -> set[str]:
    """Every module an import statement names, lazy imports inside functions included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _under(name: str, roots: tuple[str, ...]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in roots)


def test_the_gateway_imports_nothing_from_experiments() -> None:
    offenders = {m: sorted(n for n in imported(p) if _under(n, ("experiments",)))
                 for m, p in MODULES.items() if _under(m, ("gateway",))}
    assert {m: n for m, n in offenders.items() if n} == {}


def test_only_the_http_layer_imports_fastapi() -> None:
    offenders = {m: sorted(n for n in imported(p) if _under(n, WEB))
                 for m, p in MODULES.items() if _under(m, ("gateway",)) and not _under(m, ("gateway.http",))}
    assert {m: n for m, n in offenders.items() if n} == {}


def test_no_import_cycles() -> None:
    graph = {m: {n for n in imported(p) if n in MODULES and n != m} for m, p in MODULES.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_module_is_too_long() -> None:
    lengths = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    assert {m: n for m, n in lengths.items() if n > MAX_LINES} == {}


def test_the_check_sees_a_violation() -> None:
    """The checks above read real imports: this module's own are found."""
    assert {"ast", "pathlib.Path", "pathlib"} <= imported(Path(__file__))
    assert "gateway.http.app" in MODULES and "experiments.compare" in MODULES
