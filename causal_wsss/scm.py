"""The CONTA structural causal model as a graph, with d-separation and backdoor queries (method.md §1)."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable

import networkx as nx

from causal_wsss.errors import ConfigError

NODE_DESCRIPTIONS: dict[str, str] = {
    "C": "context prior (confounder): where objects of each class sit, their shapes, "
         "which classes co-occur; approximated by the confounder dictionary",
    "X": "the image (its pixels)",
    "M": "image-specific context: the image read through the context templates of C",
    "Y": "the image-level multi-label class vector",
}

CONTA_EDGES: tuple[tuple[str, str], ...] = (
    ("C", "X"), ("C", "M"), ("X", "M"), ("X", "Y"), ("M", "Y"),
)

_MAX_CANDIDATES = 20  # 2**20 subsets is the most an exhaustive search should try


def conta_graph() -> nx.DiGraph:
    """The CONTA SCM of paper Fig. 3(a): C->X, C->M, X->M, X->Y, M->Y (method.md §1).

    Every node carries ``description`` (from ``NODE_DESCRIPTIONS``) and ``observed=True``;
    in the real method C is not a data column but the toy simulator observes it.
    """
    graph = nx.DiGraph(name="CONTA")
    for node, text in NODE_DESCRIPTIONS.items():
        graph.add_node(node, description=text, observed=True)
    graph.add_edges_from(CONTA_EDGES)
    return graph


def conta_layout() -> dict[str, tuple[float, float]]:
    """Node positions for drawing the CONTA graph: C on top, X -> M -> Y left to right below."""
    return {"C": (0.5, 1.0), "X": (0.0, 0.0), "M": (0.5, 0.45), "Y": (1.0, 0.0)}


def _check_nodes(graph: nx.DiGraph, nodes: Iterable[str], what: str) -> frozenset[str]:
    nodes = frozenset([nodes] if isinstance(nodes, str) else nodes)
    missing = sorted(str(n) for n in nodes - set(graph.nodes))
    if missing:
        raise ConfigError(f"{what}: node(s) {missing} are not in the graph; "
                          f"expected some of {sorted(map(str, graph.nodes))}")
    return nodes


def _check_dag(graph: nx.DiGraph) -> None:
    if not isinstance(graph, nx.DiGraph) or not nx.is_directed_acyclic_graph(graph):
        raise ConfigError("graph: expected a networkx.DiGraph without directed cycles")


def intervene(graph: nx.DiGraph, node: str | Iterable[str]) -> nx.DiGraph:
    """The graph under do(node): a copy with every edge into ``node`` removed (paper Fig. 3(b))."""
    targets = _check_nodes(graph, node, "intervene")
    cut = graph.copy()
    cut.remove_edges_from([(u, v) for u, v in graph.edges if v in targets])
    return cut


def _reach(graph: nx.DiGraph, start: Iterable[str], step) -> set[str]:
    seen: set[str] = set()
    stack = list(start)
    while stack:
        for nxt in step(stack.pop()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def descendants(graph: nx.DiGraph, node: str) -> set[str]:
    """Nodes reachable from ``node`` by directed paths, ``node`` itself excluded."""
    _check_nodes(graph, node, "descendants")
    return _reach(graph, [node], graph.successors) - {node}


def ancestors(graph: nx.DiGraph, node: str) -> set[str]:
    """Nodes with a directed path into ``node``, ``node`` itself excluded."""
    _check_nodes(graph, node, "ancestors")
    return _reach(graph, [node], graph.predecessors) - {node}


def is_d_separated(graph: nx.DiGraph, xs: str | Iterable[str], ys: str | Iterable[str],
                   zs: str | Iterable[str] = ()) -> bool:
    """Whether ``zs`` d-separates ``xs`` from ``ys`` (Pearl 2009, Def. 1.2.3).

    Lauritzen's criterion: keep the ancestral set of xs ∪ ys ∪ zs, moralise it (marry the
    parents of every node, drop directions), delete zs; the answer is True iff no undirected
    path then joins xs to ys. The three sets must be disjoint.
    """
    _check_dag(graph)
    xs = _check_nodes(graph, xs, "is_d_separated xs")
    ys = _check_nodes(graph, ys, "is_d_separated ys")
    zs = _check_nodes(graph, zs, "is_d_separated zs")
    if xs & ys or xs & zs or ys & zs:
        raise ConfigError(f"is_d_separated: xs {sorted(xs)}, ys {sorted(ys)} and zs {sorted(zs)} "
                          "must be disjoint")
    keep = set(xs | ys | zs)
    keep |= _reach(graph, keep, graph.predecessors)
    moral: dict[str, set[str]] = {v: set() for v in keep}
    for v in keep:
        parents = [p for p in graph.predecessors(v) if p in keep]
        for p in parents:
            moral[v].add(p)
            moral[p].add(v)
        for p, q in itertools.combinations(parents, 2):
            moral[p].add(q)
            moral[q].add(p)
    reached = _reach(graph, xs, lambda v: moral[v] - zs) | set(xs)
    return not (reached & ys)


def backdoor_paths(graph: nx.DiGraph, treatment: str, outcome: str) -> list[list[str]]:
    """All simple paths treatment ... outcome in the skeleton whose first edge points into
    the treatment (X <- ...), as node lists starting at ``treatment``, sorted.

    For the CONTA graph this is [['X', 'C', 'M', 'Y']] (method.md §1).
    """
    _check_dag(graph)
    _check_nodes(graph, [treatment, outcome], "backdoor_paths")
    paths: list[list[str]] = []

    def extend(path: list[str]) -> None:
        last = path[-1]
        if last == outcome:
            paths.append(list(path))
            return
        for nxt in set(graph.successors(last)) | set(graph.predecessors(last)):
            if nxt not in path:
                path.append(nxt)
                extend(path)
                path.pop()

    for parent in graph.predecessors(treatment):
        extend([treatment, parent])
    return sorted(paths)


def path_is_blocked(graph: nx.DiGraph, path: list[str], zset: Iterable[str]) -> bool:
    """Whether ``zset`` blocks the skeleton path ``path`` (Pearl 2009, Def. 1.2.3).

    A path is blocked iff it has a non-collider in zset, or a collider (-> v <-) that is
    neither in zset nor an ancestor of a node of zset.
    """
    zs = _check_nodes(graph, zset, "path_is_blocked zset")
    _check_nodes(graph, path, "path_is_blocked path")
    for prev, v, nxt in zip(path, path[1:], path[2:]):
        collider = graph.has_edge(prev, v) and graph.has_edge(nxt, v)
        if collider:
            if v not in zs and not (descendants(graph, v) & zs):
                return True
        elif v in zs:
            return True
    return False


def satisfies_backdoor(graph: nx.DiGraph, treatment: str, outcome: str,
                       zset: Iterable[str]) -> bool:
    """The backdoor criterion (Pearl 2009, Def. 3.3.1): no node of ``zset`` descends from the
    treatment, and ``zset`` blocks every backdoor path. The second part is checked as
    d-separation of treatment and outcome in the graph without the treatment's out-edges.
    """
    _check_dag(graph)
    zs = _check_nodes(graph, zset, "satisfies_backdoor zset")
    _check_nodes(graph, [treatment, outcome], "satisfies_backdoor")
    if treatment in zs or outcome in zs:
        raise ConfigError(f"satisfies_backdoor: zset {sorted(zs)} must not contain the "
                          f"treatment {treatment!r} or the outcome {outcome!r}")
    if zs & descendants(graph, treatment):
        return False
    no_out = graph.copy()
    no_out.remove_edges_from(list(graph.out_edges(treatment)))
    return is_d_separated(no_out, {treatment}, {outcome}, zs)


def _candidates(graph: nx.DiGraph, treatment: str, outcome: str,
                observed: Iterable[str] | None) -> list[str]:
    if observed is None:
        observed = [v for v, keep in graph.nodes(data="observed", default=True) if keep]
    observed = _check_nodes(graph, observed, "observed")
    excluded = descendants(graph, treatment) | {treatment, outcome}
    pool = sorted(observed - excluded)
    if len(pool) > _MAX_CANDIDATES:
        raise ConfigError(f"backdoor set search: {len(pool)} candidate nodes, at most "
                          f"{_MAX_CANDIDATES} can be searched exhaustively")
    return pool


def backdoor_adjustment_sets(graph: nx.DiGraph, treatment: str, outcome: str,
                             observed: Iterable[str] | None = None) -> list[tuple[str, ...]]:
    """Every set of observed non-descendants of the treatment that satisfies the backdoor
    criterion, as sorted tuples, ordered by size then name.

    ``observed`` defaults to the nodes whose ``observed`` attribute is not False.
    """
    _check_dag(graph)
    _check_nodes(graph, [treatment, outcome], "backdoor_adjustment_sets")
    pool = _candidates(graph, treatment, outcome, observed)
    return [subset for size in range(len(pool) + 1)
            for subset in itertools.combinations(pool, size)
            if satisfies_backdoor(graph, treatment, outcome, subset)]


def minimal_backdoor_sets(graph: nx.DiGraph, treatment: str, outcome: str,
                          observed: Iterable[str] | None = None) -> list[tuple[str, ...]]:
    """The valid backdoor sets none of whose proper subsets is valid, sorted (size, names).

    Sets are enumerated by increasing size, so a valid set is minimal iff it contains no
    minimal set found before it. An empty list means no observed set identifies the effect
    by adjustment (e.g. the front-door graph with U unobserved).
    """
    minimal: list[tuple[str, ...]] = []
    for subset in backdoor_adjustment_sets(graph, treatment, outcome, observed):
        if not any(set(small) <= set(subset) for small in minimal):
            minimal.append(subset)
    return minimal


def dowhy_backdoor_set(graph: nx.DiGraph, treatment: str = "X", outcome: str = "Y") -> list[str]:
    """The backdoor adjustment set DoWhy's identifier picks, sorted (expect ['C'] for CONTA).

    DoWhy needs a data frame: a four-row dummy frame with one column per observed node is
    built (nodes with ``observed=False`` are left out, so DoWhy treats them as unobserved).
    The identification uses the graph only, never these values.
    """
    _check_dag(graph)
    _check_nodes(graph, [treatment, outcome], "dowhy_backdoor_set")
    import pandas as pd
    from dowhy import CausalModel

    columns = [str(v) for v, keep in graph.nodes(data="observed", default=True) if keep]
    frame = pd.DataFrame({name: [0, 1, 0, 1] for name in columns})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=SyntaxWarning)
        warnings.simplefilter("ignore", category=UserWarning)  # "variables assumed unobserved"
        model = CausalModel(data=frame, treatment=treatment, outcome=outcome,
                            graph=nx.DiGraph(graph.edges))
        estimand = model.identify_effect(proceed_when_unidentifiable=True)
    return sorted(estimand.get_backdoor_variables() or [])
