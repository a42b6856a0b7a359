"""No import cycles among our packages (issue 16).

The graph is grimp's (the library import-linter runs on), built from the source
by parsing, so it holds every import: at module top, inside functions, and under
``if TYPE_CHECKING:``. A TYPE_CHECKING-only import never runs, but it still says
"this module needs that one to be understood": two modules that name each other
are one unit to read and to change, which is what the issue counts. So they count.

A cycle is a strongly connected component of the module graph (two or more
modules that each reach the others). The test lists every one it finds.
"""

from __future__ import annotations

import grimp

PACKAGES = ("cascade", "workers", "tasks", "models", "common", "migrations")


def cycles_of(graph: grimp.ImportGraph) -> set[frozenset[str]]:
    """Every strongly connected component of two or more modules."""
    cycles: set[frozenset[str]] = set()
    seen: set[str] = set()
    for module in sorted(graph.modules):
        if module in seen:
            continue
        # what the module reaches and what reaches it: both at once is its cycle
        both = graph.find_upstream_modules(module) & graph.find_downstream_modules(module)
        component = frozenset(both | {module})
        seen |= component
        if len(component) > 1:
            cycles.add(component)
    return cycles


def import_cycles(*packages: str) -> set[frozenset[str]]:
    return cycles_of(grimp.build_graph(*packages, cache_dir=None))


def _show(cycles: set[frozenset[str]] | frozenset[frozenset[str]]) -> str:
    return "\n".join("  " + " <-> ".join(sorted(c)) for c in sorted(cycles, key=sorted))


def test_no_import_cycles() -> None:
    cycles = import_cycles(*PACKAGES)
    assert not cycles, f"import cycles (TYPE_CHECKING imports count):\n{_show(cycles)}"


def test_the_check_finds_each_cycle_and_only_cycles() -> None:
    graph = grimp.ImportGraph()
    edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("e", "d"), ("f", "a")]
    for importer, imported in edges:
        graph.add_import(importer=f"pkg.{importer}", imported=f"pkg.{imported}")
    assert cycles_of(graph) == {
        frozenset({"pkg.a", "pkg.b", "pkg.c"}),
        frozenset({"pkg.d", "pkg.e"}),
    }
