"""The package's imports, module by module (function-level imports included: grimp
reads them): no module reaches itself again through its imports. import-linter's
contracts (``.ci/typecheck``) check the layers and cycles between sibling packages; a
package importing its own submodules while they import it back is checked here."""

from __future__ import annotations

import grimp


def cycles(graph) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in sorted(edges):
        if m not in index:
            visit(m)
    return found


def test_no_module_imports_itself_back():
    graph = grimp.build_graph("francine", include_external_packages=False)
    assert len(graph.modules) > 50
    assert cycles(graph) == []


def test_the_check_sees_a_cycle():
    graph = grimp.ImportGraph()
    for m in ("a", "a.b", "a.c"):
        graph.add_module(m)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    assert cycles(graph) == [["a.b", "a.c"]]
