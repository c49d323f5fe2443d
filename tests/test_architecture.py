"""The layout's rules, read from the code's own imports: the gateway's packages in one order (each
imports only the packages before it), MLflow reached through gateway/mlflow/ only, settings that
assemble the components' specs and nothing else, the gateway never importing the report or the bench,
only gateway/http/ speaking FastAPI, no import cycles, no module past about 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "experiments", "models", "stack")
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


def test_the_gateway_never_imports_the_local_stack_and_nothing_imports_the_tests() -> None:
    """The benchmarks and ``make replicas`` start processes through stack/, as the tests do."""
    offenders = {m: sorted(n for n in imported(p) if (_under(n, ("stack",)) and _under(m, ("gateway",)))
                           or _under(n, ("tests",)))
                 for m, p in MODULES.items()}
    assert {m: n for m, n in offenders.items() if n} == {}


def test_only_the_http_layer_imports_fastapi() -> None:
    offenders = {m: sorted(n for n in imported(p) if _under(n, WEB))
                 for m, p in MODULES.items() if _under(m, ("gateway",)) and not _under(m, ("gateway.http",))}
    assert {m: n for m, n in offenders.items() if n} == {}


# The gateway's packages, lowest first: each may import only those on earlier lines. Packages on one
# line import neither each other. A package's ``__main__`` and gateway/cli.py are entry points, above all.
ORDER: tuple[tuple[str, ...], ...] = (
    ("domain", "stats"),
    ("security",),
    ("spool", "delta"),
    ("mlflow",),
    ("variants",),
    ("protocols",),
    ("routing",),
    ("rollout", "bandit"),
    ("state",),
    ("config",),
    ("serving",),
    ("export",),
    ("wiring",),
    ("grpc",),
    ("http",),
    ("entry",),
)
RANK = {package: rank for rank, line in enumerate(ORDER) for package in line}


def package_of(module: str) -> str:
    """The gateway package a module belongs to, for the order: entry points count as ``entry``."""
    parts = module.split(".")
    if parts[-1] == "__main__" or module == "gateway.cli":
        return "entry"
    return parts[1]


def package_imports() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the module pairs behind it, between different packages."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, path in MODULES.items():
        if not _under(module, ("gateway",)) or module == "gateway":
            continue
        for name in imported(path):
            if name in MODULES and _under(name, ("gateway",)) and name != "gateway":
                a, b = package_of(module), package_of(name)
                if a != b:
                    edges.setdefault((a, b), []).append(f"{module} -> {name}")
    return edges


def test_every_gateway_package_has_a_place_in_the_order() -> None:
    packages = {package_of(m) for m in MODULES if _under(m, ("gateway",)) and m != "gateway"}
    assert packages == set(RANK)


def test_each_package_imports_only_the_packages_before_it() -> None:
    against = {pair: modules for pair, modules in package_imports().items() if RANK[pair[0]] <= RANK[pair[1]]}
    assert against == {}


def test_only_gateway_mlflow_imports_mlflow() -> None:
    offenders = {m: sorted(n for n in imported(p) if _under(n, ("mlflow",)))
                 for m, p in MODULES.items() if _under(m, ("gateway",)) and not _under(m, ("gateway.mlflow",))}
    assert {m: n for m, n in offenders.items() if n} == {}


def test_the_settings_import_only_the_components_specs() -> None:
    """config/ assembles the sections each component defines beside its code (their ``spec`` modules)
    and imports nothing else of theirs."""
    allowed = ("gateway.config", "gateway.domain", "gateway.routing.spec", "gateway.variants.spec",
               "gateway.variants.schema", "gateway.bandit.spec", "gateway.rollout.spec", "gateway.security.spec",
               "gateway.delta.spec")
    offenders = {m: sorted(n for n in imported(p) if _under(n, ("gateway",)) and not _under(n, allowed))
                 for m, p in MODULES.items() if _under(m, ("gateway.config",))}
    assert {m: n for m, n in offenders.items() if n} == {}


def test_the_order_check_sees_a_violation() -> None:
    """The order is read from real imports: the HTTP layer imports the wiring, which comes before it."""
    edges = package_imports()
    assert ("http", "wiring") in edges and ("wiring", "http") not in edges
    assert package_of("gateway.rollout.__main__") == "entry" and package_of("gateway.rollout.controller") == "rollout"


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
