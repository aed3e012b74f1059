"""Textbook causal graphs with their known backdoor adjustment sets (the table scm.py is tested against)."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx


@dataclass(frozen=True)
class ExampleGraph:
    """One textbook graph: ``minimal`` lists every minimal valid backdoor set among the
    observed nodes (sorted tuples, sorted by size then names; [] = not identifiable by
    adjustment), ``valid`` and ``invalid`` some further sets to check, ``n_backdoor_paths``
    the number of backdoor paths from treatment to outcome."""

    name: str
    edges: tuple[tuple[str, str], ...]
    treatment: str
    outcome: str
    minimal: tuple[tuple[str, ...], ...]
    valid: tuple[tuple[str, ...], ...] = ()
    invalid: tuple[tuple[str, ...], ...] = ()
    unobserved: tuple[str, ...] = ()
    n_backdoor_paths: int = 0

    def graph(self) -> nx.DiGraph:
        """The DAG, nodes in ``unobserved`` marked ``observed=False``."""
        graph = nx.DiGraph(self.edges)
        nx.set_node_attributes(graph, {v: v not in self.unobserved for v in graph.nodes},
                               "observed")
        return graph


EXAMPLE_GRAPHS: tuple[ExampleGraph, ...] = (
    ExampleGraph(
        name="simple confounder",
        edges=(("Z", "X"), ("Z", "Y"), ("X", "Y")),
        treatment="X", outcome="Y",
        minimal=(("Z",),), invalid=((),), n_backdoor_paths=1,
    ),
    ExampleGraph(
        name="mediator chain",
        edges=(("X", "M"), ("M", "Y")),
        treatment="X", outcome="Y",
        minimal=((),), invalid=(("M",),), n_backdoor_paths=0,
    ),
    ExampleGraph(
        # Pearl, Glymour & Jewell (2016) Fig. 3.6 / Greenland's M-bias: M is a collider.
        name="M-bias",
        edges=(("A", "X"), ("A", "M"), ("B", "M"), ("B", "Y"), ("X", "Y")),
        treatment="X", outcome="Y",
        minimal=((),), valid=(("A",), ("B",), ("A", "M"), ("B", "M"), ("A", "B", "M")),
        invalid=(("M",),), n_backdoor_paths=1,
    ),
    ExampleGraph(
        name="CONTA",
        edges=(("C", "X"), ("C", "M"), ("X", "M"), ("X", "Y"), ("M", "Y")),
        treatment="X", outcome="Y",
        minimal=(("C",),), invalid=((), ("M",), ("C", "M")), n_backdoor_paths=1,
    ),
    ExampleGraph(
        # Pearl (2009) Fig. 3.5: identifiable only by the front-door formula through Z.
        name="front-door, U unobserved",
        edges=(("U", "X"), ("U", "Y"), ("X", "Z"), ("Z", "Y")),
        treatment="X", outcome="Y",
        minimal=(), invalid=((), ("Z",)), unobserved=("U",), n_backdoor_paths=1,
    ),
    ExampleGraph(
        name="front-door, U observed",
        edges=(("U", "X"), ("U", "Y"), ("X", "Z"), ("Z", "Y")),
        treatment="X", outcome="Y",
        minimal=(("U",),), invalid=((), ("U", "Z")), n_backdoor_paths=1,
    ),
    ExampleGraph(
        # Pearl, Glymour & Jewell (2016) Fig. 3.8 (Pearl 2009 Fig. 3.4), study question 3.3.1.
        name="Pearl Fig. 3.8",
        edges=(("Z1", "Z3"), ("Z2", "Z3"), ("Z1", "X"), ("Z3", "X"), ("Z3", "Y"),
               ("Z2", "Y"), ("X", "W"), ("W", "Y")),
        treatment="X", outcome="Y",
        minimal=(("Z1", "Z3"), ("Z2", "Z3")), valid=(("Z1", "Z2", "Z3"),),
        invalid=((), ("Z3",), ("Z1", "Z2"), ("W",), ("W", "Z1", "Z3")), n_backdoor_paths=4,
    ),
    ExampleGraph(
        name="two confounders",
        edges=(("Z1", "X"), ("Z1", "Y"), ("Z2", "X"), ("Z2", "Y"), ("X", "Y")),
        treatment="X", outcome="Y",
        minimal=(("Z1", "Z2"),), invalid=((), ("Z1",), ("Z2",)), n_backdoor_paths=2,
    ),
    ExampleGraph(
        # D looks like a proxy of the confounder but descends from the treatment.
        name="descendant of treatment",
        edges=(("Z", "X"), ("Z", "Y"), ("X", "Y"), ("X", "D"), ("Z", "D")),
        treatment="X", outcome="Y",
        minimal=(("Z",),), invalid=(("D",), ("D", "Z")), n_backdoor_paths=1,
    ),
    ExampleGraph(
        # Butterfly / bow-tie: Z is a confounder and a collider of A and B at once.
        name="butterfly",
        edges=(("A", "X"), ("A", "Z"), ("B", "Z"), ("B", "Y"), ("Z", "X"), ("Z", "Y"),
               ("X", "Y")),
        treatment="X", outcome="Y",
        minimal=(("A", "Z"), ("B", "Z")), valid=(("A", "B", "Z"),),
        invalid=((), ("Z",), ("A", "B")), n_backdoor_paths=4,
    ),
    ExampleGraph(
        # The bow arc: a latent common cause and nothing else, not identifiable.
        name="bow",
        edges=(("U", "X"), ("U", "Y"), ("X", "Y")),
        treatment="X", outcome="Y",
        minimal=(), invalid=((),), unobserved=("U",), n_backdoor_paths=1,
    ),
    ExampleGraph(
        # An instrument I is no adjustment set: the latent U still confounds.
        name="instrument with latent confounder",
        edges=(("I", "X"), ("U", "X"), ("U", "Y"), ("X", "Y")),
        treatment="X", outcome="Y",
        minimal=(), invalid=((), ("I",)), unobserved=("U",), n_backdoor_paths=1,
    ),
)
