"""The supernet of the recurrent space: DARTS' search cell in its language model
(quark0/darts ``rnn/model_search.py`` ``DARTSCellSearch``, ``RNNModelSearch``).

At every time step the cell computes ``s_0`` (:mod:`dnas.spaces.recurrent_ops`), then each
intermediate node ``i = 1..8`` from all earlier nodes, through ``W_i`` (shared by the node's edges
and ops) and the activated architecture weights ``p`` (rows of node ``i``; ``none`` contributes
nothing but keeps its share of ``p``)::

    [c_j, h_j] = (s_j * m_h) W_i                                          j = 0..i-1
    s_i = BN( sum_j sum_{k != none} p_{jk} (s_j + sigmoid(c_j) (f_k(h_j) - s_j)) )

with one BatchNorm without affine parameters (running statistics kept, momentum 0.1) shared by
``s_0`` (also normalised) and every node at every step, as in DARTS' code; the output is the mean of
nodes 1..8. Since the ops of an edge share ``c_j`` and ``s_j``, the node is

    s_i = BN( sum_j [ P_j s_j (1 - g_j) + g_j sum_{k != none} p_{jk} f_k(h_j) ] ),   g_j = sigmoid(c_j),
    P_j = sum_{k != none} p_{jk}

which :class:`FusedRecurrentCell` computes for all edges of a node at once: one product of the
stacked (masked) predecessors with ``W_i``, then the mixed activation of all ``i`` edges as one
batched weighted sum over the ops (no per-op copy of the highway update). The input half of
``[x_t, h_{t-1}] W_0`` is one product for all time steps. :class:`ReferenceRecurrentCell` computes
the formula edge by edge and op by op, as written (the check of the fused cell, in float64).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dnas.spaces.base import SearchSpace
from dnas.spaces.recurrent import node_rows
from dnas.spaces.recurrent_ops import ACTIVATION_FUNCTIONS, RecurrentCellBase, RecurrentLanguageModel, highway
from dnas.supernet.network import Supernet


class FusedRecurrentCell(RecurrentCellBase):
    """DARTS' search cell over ``ops`` (the column order of the architecture weights), fused per node."""

    def __init__(self, ninp: int, nhid: int, ops: Sequence[str], nodes: int, *, dropout_x: float = 0.0,
                 dropout_h: float = 0.0):
        super().__init__(ninp, nhid, nodes, dropout_x=dropout_x, dropout_h=dropout_h)
        self.ops = tuple(ops)
        self.nodes = nodes
        #: (column, activation) of every op that computes something
        self.activations = [(k, ACTIVATION_FUNCTIONS[name]) for k, name in enumerate(self.ops) if name != "none"]
        self.columns = [k for k, _ in self.activations]
        # DARTS' one BatchNorm1d(nhid, affine=False) of the cell, called as a function (its module call costs
        # more than the normalisation at these sizes); the running statistics as its buffers
        self.running_mean: Tensor
        self.running_var: Tensor
        self.register_buffer("running_mean", torch.zeros(nhid))
        self.register_buffer("running_var", torch.ones(nhid))

    def bn(self, x: Tensor) -> Tensor:
        """BatchNorm without affine parameters: batch statistics in training (running averages updated with
        momentum 0.1), the running averages in eval mode."""
        return F.batch_norm(x, self.running_mean, self.running_var, None, None, self.training, 0.1, 1e-5)

    def forward(self, inputs: Tensor, hidden: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        """``inputs (T, B, ninp)``, ``hidden (B, nhid)``, ``weights`` the activated ``(E, K)`` matrix;
        returns the outputs ``(T, B, nhid)`` and the last one."""
        x_mask, h_mask = self.masks(inputs)
        initial = self.initial_states(inputs, hidden, x_mask, h_mask)
        outputs = []
        h = hidden
        for t in range(inputs.shape[0]):
            h = self.step(self.bn(initial(t, h)), weights, h_mask)
            outputs.append(h)
        return torch.stack(outputs), h

    def step(self, s0: Tensor, weights: Tensor, h_mask: Tensor | None) -> Tensor:
        """One time step from the normalised ``s_0``: the nodes, then their mean."""
        states = [s0]
        masked = [s0 if h_mask is None else s0 * h_mask]
        for node in range(1, self.nodes + 1):
            rows = node_rows(node)
            s = self.bn(self.node(node, states, masked, weights[rows.start: rows.stop]))
            states.append(s)
            masked.append(s if h_mask is None else s * h_mask)
        return torch.stack(states[1:]).mean(0)

    def node(self, node: int, states: list[Tensor], masked: list[Tensor], p: Tensor) -> Tensor:
        """Node ``node`` before its BatchNorm, every incoming edge at once (module docstring)."""
        stacked = torch.stack(states)  # (i, B, H)
        ch = torch.stack(masked) @ self.ws[node - 1]  # (i, B, 2H): one product for all edges
        c, h = ch.split(self.nhid, dim=-1)
        gate = torch.sigmoid(c)
        p = p[:, self.columns]  # (i, n): the ops that compute
        # the mixed activation of every edge in one contraction over the ops: sum_k p_jk f_k(h_j)
        mixed = (torch.stack([f(h) for _, f in self.activations]) * p.t()[:, :, None, None]).sum(0)
        carried = p.sum(1)[:, None, None] * stacked  # P_j s_j
        return (carried + gate * (mixed - carried)).sum(0)


class ReferenceRecurrentCell(FusedRecurrentCell):
    """The same cell computed as DARTS writes it, edge by edge and op by op: one product per edge,
    ``s_j + sigmoid(c_j) (f_k(h_j) - s_j)`` per op, ``[x_t * m_x, h_{t-1} * m_h] W_0`` per step."""

    def initial_states(self, inputs: Tensor, hidden: Tensor, x_mask: Tensor | None, h_mask: Tensor | None
                       ) -> Callable[[int, Tensor], Tensor]:
        def state(t: int, h_prev: Tensor) -> Tensor:
            x = inputs[t] if x_mask is None else inputs[t] * x_mask
            xh = torch.cat([x, h_prev if h_mask is None else h_prev * h_mask], dim=-1)
            c0, h0 = (xh @ self.w0).split(self.nhid, dim=-1)
            return highway(h_prev, c0, torch.tanh(h0))

        return state

    def node(self, node: int, states: list[Tensor], masked: list[Tensor], p: Tensor) -> Tensor:
        out = torch.zeros_like(states[0])
        for j, (s, m) in enumerate(zip(states, masked, strict=True)):
            c, h = (m @ self.ws[node - 1]).split(self.nhid, dim=-1)
            for k, f in self.activations:
                out = out + p[j, k] * highway(s, c, f(h))
        return out


class RecurrentSupernet(RecurrentLanguageModel, Supernet):
    """DARTS' search model: embedding, ``layers`` stacked search cells sharing the architecture
    (one in DARTS; Lambda-DARTS' code stacks two), tied decoder. ``forward(inputs, hidden,
    cell_weights)`` takes one activated ``(E, K)`` matrix per cell and returns the logits, the final
    hidden state of every cell and the last cell's raw output (:class:`RecurrentLanguageModel`)."""

    def __init__(self, space: SearchSpace, vocabulary: int, hidden: int, *, layers: int = 1, dropout: float = 0.0,
                 dropout_h: float = 0.0, dropout_x: float = 0.0, dropout_i: float = 0.0, dropout_e: float = 0.0,
                 fused: bool = True):
        (cell_type, topo), = space.cells.items()
        ops = topo.shared_ops
        if ops is None:
            raise ValueError("a recurrent supernet needs the same ops on every edge")
        kind = FusedRecurrentCell if fused else ReferenceRecurrentCell
        cells = [kind(hidden, hidden, ops, topo.num_nodes, dropout_x=dropout_x, dropout_h=dropout_h)
                 for _ in range(layers)]
        super().__init__(vocabulary, hidden, cells, dropout=dropout, dropout_i=dropout_i, dropout_e=dropout_e)
        self.space = space
        self.cell_types = [cell_type] * layers

    def forward(self, inputs: Tensor, hidden: Sequence[Tensor],  # type: ignore[override]
                cell_weights: Sequence[Tensor]) -> tuple[Tensor, list[Tensor], Tensor]:
        return super().forward(inputs, hidden, weights=cell_weights)

