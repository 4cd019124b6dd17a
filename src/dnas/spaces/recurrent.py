"""The DARTS recurrent-cell space (Liu, Simonyan, Yang, ICLR 2019, section 2.1 and appendix A.1.2;
quark0/darts ``rnn/genotypes.py``, ``rnn/model_search.py``).

One cell type. Node 0 is the cell's initial state ``s_0``, a highway step of the input ``x_t`` and
the previous hidden state ``h_{t-1}``; nodes 1..8 are intermediate nodes, each fed by every earlier
node; the cell output ``h_t`` is the average of the intermediate nodes 1..8 (node 0 excluded). An
edge ``j -> i`` applies a highway-gated activation to its source state::

    [c, h] = s_j W_i,       s_i <- s_j + sigmoid(c) * (f(h) - s_j)

with ``f`` one of the candidate activations ``tanh``, ``relu``, ``sigmoid``, ``identity`` (or the
``none`` op, which contributes nothing). ``W_i`` belongs to the destination node and is shared by all
its incoming edges and ops during the search (DARTS appendix A.1.2).

Edges are listed as in DARTS' code: by destination node, then source node, so node ``i`` owns the
``i`` rows ``i(i-1)/2 .. i(i+1)/2 - 1`` of the ``(36, 5)`` architecture weights, and row
``i(i-1)/2 + j`` is the edge from node ``j``.
"""

from __future__ import annotations

from dnas.spaces.base import SPACES, CellTopology, SearchSpace

#: the candidate ops of every edge, in the column order of DARTS' ``PRIMITIVES``
RNN_OPS = ("none", "tanh", "relu", "sigmoid", "identity")
#: intermediate nodes of the search cell (DARTS' ``STEPS``); the output averages the last ``CONCAT`` nodes
STEPS = 8
CONCAT = 8
#: the embedding and hidden size of the search model (train_search.py --emsize/--nhid/--nhidlast 300)
SEARCH_HIDDEN = 300
#: the embedding and hidden size of the evaluation model (train.py --emsize/--nhid/--nhidlast 850)
EVAL_HIDDEN = 850

RNN = SPACES.register("rnn")(
    SearchSpace(
        name="rnn",
        description="DARTS recurrent cell (language modelling): 5 activations on each of 36 edges, 8 nodes",
        family="rnn",
        cells={"recurrent": CellTopology(num_inputs=1, num_nodes=STEPS,
                                         edge_ops=(RNN_OPS,) * (STEPS * (STEPS + 1) // 2))},
        derivation="darts-rnn",
        default_channels=SEARCH_HIDDEN,
        default_layers=1,
    )
)


def node_rows(node: int) -> range:
    """The rows of the architecture weights that belong to intermediate node ``node`` (1-based)."""
    first = node * (node - 1) // 2
    return range(first, first + node)
