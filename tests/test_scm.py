"""Tests for causal_wsss.scm: the CONTA graph, d-separation and backdoor queries against textbook graphs, networkx and DoWhy."""

from __future__ import annotations

import itertools
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest
from example_graphs import EXAMPLE_GRAPHS, ExampleGraph

from causal_wsss import scm
from causal_wsss.errors import ConfigError


def test_conta_graph_structure():
    graph = scm.conta_graph()
    assert set(graph.nodes) == {"C", "X", "M", "Y"}
    assert set(graph.edges) == {("C", "X"), ("C", "M"), ("X", "M"), ("X", "Y"), ("M", "Y")}
    assert nx.is_directed_acyclic_graph(graph)
    for node in graph.nodes:
        assert graph.nodes[node]["description"] == scm.NODE_DESCRIPTIONS[node]
    assert set(scm.conta_layout()) == set(graph.nodes)


def test_intervene_cuts_incoming_edges_only():
    graph = scm.conta_graph()
    cut = scm.intervene(graph, "X")
    assert set(cut.edges) == {("C", "M"), ("X", "M"), ("X", "Y"), ("M", "Y")}
    assert graph.has_edge("C", "X")  # the original is untouched
    assert cut.nodes["C"]["description"] == scm.NODE_DESCRIPTIONS["C"]
    assert set(scm.intervene(graph, ["X", "M"]).edges) == {("X", "Y"), ("M", "Y")}
    # after do(X) nothing but X's own effect links X and Y: the backdoor path is gone
    assert scm.backdoor_paths(cut, "X", "Y") == []
    assert scm.satisfies_backdoor(cut, "X", "Y", ())


def test_descendants_and_ancestors():
    graph = scm.conta_graph()
    assert scm.descendants(graph, "X") == {"M", "Y"}
    assert scm.descendants(graph, "C") == {"X", "M", "Y"}
    assert scm.descendants(graph, "Y") == set()
    assert scm.ancestors(graph, "M") == {"C", "X"}


def test_conta_backdoor_path_and_sets():
    graph = scm.conta_graph()
    assert scm.backdoor_paths(graph, "X", "Y") == [["X", "C", "M", "Y"]]
    assert scm.satisfies_backdoor(graph, "X", "Y", {"C"})
    assert not scm.satisfies_backdoor(graph, "X", "Y", {"M"})  # M is a mediator
    assert scm.minimal_backdoor_sets(graph, "X", "Y") == [("C",)]


def test_d_separation_by_hand():
    chain = nx.DiGraph([("A", "B"), ("B", "C")])
    collider = nx.DiGraph([("A", "B"), ("C", "B"), ("B", "D")])
    assert not scm.is_d_separated(chain, "A", "C")
    assert scm.is_d_separated(chain, "A", "C", "B")
    assert scm.is_d_separated(collider, "A", "C")
    assert not scm.is_d_separated(collider, "A", "C", "B")
    assert not scm.is_d_separated(collider, "A", "C", "D")  # a collider's descendant opens it
    conta = scm.conta_graph()
    assert scm.is_d_separated(conta, "C", "Y", {"X", "M"})
    assert not scm.is_d_separated(conta, "C", "Y", {"X"})


@pytest.mark.parametrize("example", EXAMPLE_GRAPHS, ids=lambda e: e.name)
def test_textbook_backdoor_sets(example: ExampleGraph):
    graph = example.graph()
    t, y = example.treatment, example.outcome
    assert scm.minimal_backdoor_sets(graph, t, y) == list(example.minimal)
    for zset in example.minimal + example.valid:
        assert scm.satisfies_backdoor(graph, t, y, zset), zset
    for zset in example.invalid:
        assert not scm.satisfies_backdoor(graph, t, y, zset), zset
    paths = scm.backdoor_paths(graph, t, y)
    assert len(paths) == example.n_backdoor_paths
    for path in paths:
        assert path[0] == t and path[-1] == y and graph.has_edge(path[1], t)
        assert len(set(path)) == len(path)


@pytest.mark.parametrize("example", EXAMPLE_GRAPHS, ids=lambda e: e.name)
def test_backdoor_criterion_agrees_with_path_blocking(example: ExampleGraph):
    """The d-separation check in the mutilated graph equals blocking every backdoor path."""
    graph = example.graph()
    t, y = example.treatment, example.outcome
    paths = scm.backdoor_paths(graph, t, y)
    pool = sorted(set(graph.nodes) - scm.descendants(graph, t) - {t, y})
    for size in range(len(pool) + 1):
        for zset in itertools.combinations(pool, size):
            by_paths = all(scm.path_is_blocked(graph, p, zset) for p in paths)
            assert scm.satisfies_backdoor(graph, t, y, zset) == by_paths, zset


def test_unobserved_nodes_are_not_candidates():
    example = next(e for e in EXAMPLE_GRAPHS if e.name == "front-door, U unobserved")
    graph = example.graph()
    assert scm.minimal_backdoor_sets(graph, "X", "Y") == []
    assert scm.minimal_backdoor_sets(graph, "X", "Y", observed=["U", "X", "Y", "Z"]) == [("U",)]


def test_d_separation_matches_networkx_on_random_dags():
    rng = np.random.default_rng(0)
    checked = separated = 0
    for _ in range(40):
        n = int(rng.integers(4, 9))
        upper = np.triu(rng.random((n, n)) < 0.35, k=1)
        graph = nx.DiGraph()
        graph.add_nodes_from(f"V{i}" for i in range(n))
        graph.add_edges_from((f"V{i}", f"V{j}") for i, j in zip(*np.nonzero(upper)))
        nodes = list(graph.nodes)
        for _ in range(15):
            perm = rng.permutation(nodes)
            k_x, k_y = int(rng.integers(1, 3)), int(rng.integers(1, 3))
            k_z = int(rng.integers(0, n - k_x - k_y + 1))
            xs = set(perm[:k_x])
            ys = set(perm[k_x:k_x + k_y])
            zs = set(perm[k_x + k_y:k_x + k_y + k_z])
            ours = scm.is_d_separated(graph, xs, ys, zs)
            assert ours == nx.is_d_separator(graph, xs, ys, zs), (list(graph.edges), xs, ys, zs)
            checked += 1
            separated += ours
    assert checked == 600 and 0 < separated < checked  # both answers were exercised


def test_bad_queries_raise_config_error():
    graph = scm.conta_graph()
    with pytest.raises(ConfigError, match="not in the graph"):
        scm.descendants(graph, "Z")
    with pytest.raises(ConfigError, match="disjoint"):
        scm.is_d_separated(graph, "X", "Y", {"X"})
    with pytest.raises(ConfigError, match="must not contain"):
        scm.satisfies_backdoor(graph, "X", "Y", {"Y"})
    with pytest.raises(ConfigError, match="cycles"):
        scm.is_d_separated(nx.DiGraph([("A", "B"), ("B", "A")]), "A", "B")


def test_dowhy_identifies_c_for_conta():
    assert scm.dowhy_backdoor_set(scm.conta_graph()) == ["C"]


def test_dowhy_sets_satisfy_our_criterion():
    for example in EXAMPLE_GRAPHS:
        if example.minimal:
            graph = example.graph()
            chosen = scm.dowhy_backdoor_set(graph, example.treatment, example.outcome)
            assert scm.satisfies_backdoor(graph, example.treatment, example.outcome, chosen), \
                (example.name, chosen)


def test_scm_imports_neither_torch_nor_dowhy():
    code = ("import sys, causal_wsss.scm; "
            "print('torch' in sys.modules, 'dowhy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]
