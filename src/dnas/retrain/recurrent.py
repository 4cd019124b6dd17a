"""The evaluation model of a recurrent-space genotype: DARTS' ``DARTSCell`` in its language model
(quark0/darts ``rnn/model.py``).

The derived cell computes, at every time step, ``s_0`` from ``x_t`` and ``h_{t-1}``
(:mod:`dnas.spaces.recurrent_ops`) and then node ``i`` from its one predecessor ``s_j`` with its
activation ``f_i``::

    [c, h] = (s_j * m_h) W_i,        s_i = s_j + sigmoid(c) * (f_i(h) - s_j)

The output is the mean of the ``concat`` nodes. No BatchNorm (the search cell's normalisation is
not part of the derived cell). One cell between the embedding and the tied decoder, as DARTS
evaluates its cells (850 units: 23M parameters on PTB's 10,000 words).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dnas.errors import DnasError
from dnas.spaces import Genotype
from dnas.spaces.recurrent_ops import ACTIVATION_FUNCTIONS, RecurrentCellBase, RecurrentLanguageModel, highway


def check_recurrent_genotype(genotype: Genotype) -> None:
    """Raise :class:`DnasError` unless ``genotype`` is a recurrent cell a model can be built from: one
    ``(activation, input)`` pair per node, inputs earlier nodes, the averaged nodes among them."""
    if set(genotype.cells) != {"recurrent"}:
        raise DnasError(f"a recurrent genotype has one cell type, 'recurrent'; got {', '.join(genotype.cells)}")
    pairs = genotype.cells["recurrent"]
    if not pairs:
        raise DnasError("the recurrent genotype lists no node")
    for node, (op, src) in enumerate(pairs, start=1):
        if op not in ACTIVATION_FUNCTIONS:
            raise DnasError(f"node {node} of the recurrent genotype has activation {op!r}; activations are "
                            f"{', '.join(ACTIVATION_FUNCTIONS)}")
        if not 0 <= src < node:
            raise DnasError(f"node {node} of the recurrent genotype takes input {src}; it must be an earlier node "
                            f"(0..{node - 1})")
    concat = genotype.concat.get("recurrent", ())
    if not concat or any(not 0 <= k <= len(pairs) for k in concat):
        raise DnasError(f"the recurrent genotype averages nodes {list(concat)}; they must be among 0..{len(pairs)}")


class RecurrentEvalCell(RecurrentCellBase):
    """The derived cell of ``genotype`` (module docstring)."""

    def __init__(self, genotype: Genotype, ninp: int, nhid: int, *, dropout_x: float = 0.0, dropout_h: float = 0.0):
        check_recurrent_genotype(genotype)
        pairs = genotype.cells["recurrent"]
        super().__init__(ninp, nhid, len(pairs), dropout_x=dropout_x, dropout_h=dropout_h)
        self.pairs = tuple((ACTIVATION_FUNCTIONS[op], src) for op, src in pairs)
        self.concat = tuple(genotype.concat["recurrent"])

    def forward(self, inputs: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """``inputs (T, B, ninp)``, ``hidden (B, nhid)``: the outputs ``(T, B, nhid)`` and the last one."""
        x_mask, h_mask = self.masks(inputs)
        initial = self.initial_states(inputs, hidden, x_mask, h_mask)
        outputs = []
        h = hidden
        for t in range(inputs.shape[0]):
            states = [initial(t, h)]
            for w, (f, src) in zip(self.ws, self.pairs, strict=True):
                s = states[src]
                c, z = ((s if h_mask is None else s * h_mask) @ w).split(self.nhid, dim=-1)
                states.append(highway(s, c, f(z)))
            h = torch.stack([states[k] for k in self.concat]).mean(0)
            outputs.append(h)
        return torch.stack(outputs), h


def build_recurrent_model(genotype: Genotype, vocabulary: int, hidden: int, *, dropout: float = 0.0,
                          dropout_h: float = 0.0, dropout_x: float = 0.0, dropout_i: float = 0.0,
                          dropout_e: float = 0.0) -> RecurrentLanguageModel:
    """Embedding, the cell of ``genotype``, tied decoder (``hidden`` units everywhere, as DARTS requires)."""
    cell = RecurrentEvalCell(genotype, hidden, hidden, dropout_x=dropout_x, dropout_h=dropout_h)
    return RecurrentLanguageModel(vocabulary, hidden, [cell], dropout=dropout, dropout_i=dropout_i,
                                  dropout_e=dropout_e)
