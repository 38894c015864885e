"""The package's folders are the pipeline's layers: a module imports only from its own layer or those below,
no import cycles, and no private name is imported from another module."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aurora_batch"

#: lowest first; a module may import from its own layer and those above it in this list
LAYERS = [
    ("_version", "_compat", "core", "data"),  # storage access, keys, stations, ephemeris: no domain imports
    ("formats",),  # file names and decoders
    ("datasets",),  # SYNTHETIC archives and the OATH tree, written and read
    ("instruments",),  # ceilometer and magnetometer readers, the nearest-time join
    ("model",),  # recipes, backbones, runtimes, quantisation, linear heads
    ("store",),  # where an output keeps things: layout, staged parts, month stores, versions, catalog ledger
    ("config",),  # the job's configuration, validated against the registries below
    ("plan",),  # listing, catalog, the pure planner
    ("partition",),  # reading, judging, featurising and staging one partition
    ("month",),  # building, joining and publishing a month store
    ("products",),  # what users read: results, keograms, embeddings, ridge, report, OATH evaluation
    ("runner",),  # Dask wiring: season, nightly, joins, planning tasks, cluster, worker plugin
    ("cli", "__init__"),  # the command line and the public facade
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYER[parts[1] if len(parts) > 1 else "__init__"]


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names, line) for every import of this package in ``path``, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "aurora_batch":
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            out.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "aurora_batch"]
    return out


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _target(module: str, name: str) -> str:
    """The module an imported name comes from: a submodule when it is one."""
    return f"{module}.{name}" if f"{module}.{name}" in MODULES else module


def test_every_folder_has_a_layer():
    assert {m.split(".")[1] if "." in m else "__init__" for m in MODULES} <= set(LAYER)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_runs_up_a_layer_or_takes_a_private_name(module):
    for imported, names, line in _imports(MODULES[module]):
        for target in {_target(imported, n) for n in names} or {imported}:
            if target == "aurora_batch" and module != "aurora_batch":
                pytest.fail(f"{module}:{line} imports the package root")
            assert _layer(target) <= _layer(module), f"{module}:{line} imports {target}, a layer above"
        private = [n for n in names if n.startswith("_") and n != "__version__" and _target(imported, n) == imported]
        assert not private, f"{module}:{line} imports private names {private} from {imported}"


def test_no_import_cycles():
    graph = {
        m: {_target(i, n) for i, names, _ in _imports(p) for n in names or [""]} & set(MODULES) - {m}
        for m, p in MODULES.items()
    }
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(n) :] + [n]) if n in path else n)
            if n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize(
    "old,name,new",
    [
        ("aurora_batch.join", "nearest", "aurora_batch.instruments.join"),
        ("aurora_batch.keogram", "open_night", "aurora_batch.products.keogram"),
        ("aurora_batch.imaging", "get_recipe", "aurora_batch.model.recipes"),
        ("aurora_batch.imaging", "decode", "aurora_batch.formats.decode"),
        ("aurora_batch.store", "commit_month", "aurora_batch.month.commit"),
        ("aurora_batch.formats", "read_file", "aurora_batch.formats.files"),
        ("aurora_batch.month", "run_join", "aurora_batch.runner.joins"),
    ],
)
def test_old_module_paths_forward_with_a_deprecation_warning(old, name, new):
    import importlib

    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=f"{old}.{name} moved to {new}.{name}"):
        got = getattr(module, name)
    assert got is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = module.nothing_here
