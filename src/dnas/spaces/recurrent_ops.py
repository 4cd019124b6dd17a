"""The parts of DARTS' recurrent language model shared by the search model and the evaluation model
(quark0/darts ``rnn/model.py``, ``rnn/utils.py``; the AWD-LSTM regularisers of Merity et al. 2018).

* **Candidate activations** ``tanh``, ``relu``, ``sigmoid``, ``identity`` (``none`` is not an
  activation: its edge contributes nothing).
* **The initial state** of the cell at step ``t``, a highway step of ``x_t`` and ``h_{t-1}``::

      [c_0, h_0] = [x_t * m_x, h_{t-1} * m_h] W_0,    s_0 = h_{t-1} + sigmoid(c_0) * (tanh(h_0) - h_{t-1})

  and the edge ``j -> i``: ``[c, h] = (s_j * m_h) W_i``, ``s_j + sigmoid(c) * (f(h) - s_j)``. The carry
  terms use the unmasked states; the masks only touch the matrix products.
* **Regularisers** (training only): ``m_x``, ``m_h`` are variational masks, ``Bernoulli(1-p)/(1-p)``
  of shape ``(B, D)`` drawn once per forward call and shared by every time step (``mask2d``);
  embedding dropout drops whole word types (a ``(V, 1)`` mask on the embedding matrix, ``dropout_e``);
  locked dropout masks ``(1, B, D)`` shared over time on the embedded input (``dropout_i``) and on
  the cell output (``dropout``).
* **The model around the cell(s)**: embedding, the recurrent cell(s) (stacked cells feed each other
  their raw outputs), decoder with its weight tied to the embedding, log-softmax. Every weight is
  drawn from ``U(-0.04, 0.04)``, the decoder bias is 0 (``INITRANGE``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INIT_RANGE = 0.04

ACTIVATION_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "identity": lambda x: x,
}


def variational_mask(batch: int, width: int, p: float, like: Tensor) -> Tensor:
    """``Bernoulli(1-p) / (1-p)`` of shape ``(batch, width)`` (DARTS' ``mask2d``); ones for ``p = 0``."""
    if p <= 0:
        return like.new_ones(batch, width)
    keep = 1.0 - p
    return like.new_empty(batch, width).bernoulli_(keep).div_(keep)


def embedded_dropout(weight: Tensor, words: Tensor, p: float) -> Tensor:
    """The embeddings of ``words`` with whole word types dropped: row ``v`` of ``weight`` times
    ``Bernoulli(1-p) / (1-p)``, one draw per word type and call (no-op for ``p = 0``)."""
    if p > 0:
        keep = 1.0 - p
        mask = weight.new_empty(weight.shape[0], 1).bernoulli_(keep).div_(keep)
        weight = weight * mask
    return F.embedding(words, weight)


def locked_dropout(x: Tensor, p: float) -> Tensor:
    """``x`` of shape ``(T, B, D)`` times one ``(1, B, D)`` mask ``Bernoulli(1-p)/(1-p)`` shared over time."""
    if p <= 0:
        return x
    keep = 1.0 - p
    return x * x.new_empty(1, x.shape[1], x.shape[2]).bernoulli_(keep).div_(keep)


def highway(state: Tensor, gate: Tensor, candidate: Tensor) -> Tensor:
    """``s + sigmoid(c) * (candidate - s)``: the gated update of every node of the cell."""
    return state + torch.sigmoid(gate) * (candidate - state)


def temporal_activation_regularization(raw_output: Tensor, beta: float) -> Tensor:
    """TAR (slowness): ``beta * mean((h_{t+1} - h_t)^2)`` over the cell outputs before output dropout."""
    return beta * (raw_output[1:] - raw_output[:-1]).pow(2).mean()


class RecurrentCellBase(nn.Module):
    """The parameters every recurrent cell has: ``W_0`` of shape ``(ninp + nhid, 2 nhid)`` and one
    ``W_i`` of shape ``(nhid, 2 nhid)`` per intermediate node, and the dropout rates of its masks
    (``dropout_x`` on the input, ``dropout_h`` on every state entering a product)."""

    def __init__(self, ninp: int, nhid: int, nodes: int, *, dropout_x: float = 0.0, dropout_h: float = 0.0):
        super().__init__()
        self.ninp, self.nhid = ninp, nhid
        self.dropout_x, self.dropout_h = dropout_x, dropout_h
        self.w0 = nn.Parameter(torch.empty(ninp + nhid, 2 * nhid).uniform_(-INIT_RANGE, INIT_RANGE))
        self.ws = nn.ParameterList(
            [nn.Parameter(torch.empty(nhid, 2 * nhid).uniform_(-INIT_RANGE, INIT_RANGE)) for _ in range(nodes)])

    def initial_states(self, inputs: Tensor, hidden: Tensor, x_mask: Tensor | None, h_mask: Tensor | None
                       ) -> Callable[[int, Tensor], Tensor]:
        """``s_0`` of step ``t`` from ``h_{t-1}``, as a function ``(t, h_prev) -> s_0``. The input half of
        ``[x_t, h_{t-1}] W_0`` is computed for all steps in one product up front (it does not depend on
        the recurrence)."""
        x = inputs if x_mask is None else inputs * x_mask
        from_x = (x.reshape(-1, self.ninp) @ self.w0[: self.ninp]).view(inputs.shape[0], inputs.shape[1], -1)
        w_h = self.w0[self.ninp:]

        def state(t: int, h_prev: Tensor) -> Tensor:
            ch = from_x[t] + (h_prev if h_mask is None else h_prev * h_mask) @ w_h
            c0, h0 = ch.split(self.nhid, dim=-1)
            return highway(h_prev, c0, torch.tanh(h0))

        return state

    def masks(self, inputs: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """The variational masks ``m_x``, ``m_h`` of one forward call (None in eval mode)."""
        if not self.training:
            return None, None
        batch = inputs.shape[1]
        return (variational_mask(batch, self.ninp, self.dropout_x, inputs),
                variational_mask(batch, self.nhid, self.dropout_h, inputs))


class RecurrentLanguageModel(nn.Module):
    """Embedding, ``cells`` (stacked), tied decoder; the dropouts of the module docstring.

    ``forward(inputs (T, B) int64, hidden [(B, H)] per cell, **cell_args)`` returns the decoder's
    logits ``(T * B, V)``, the final hidden state of every cell and the last cell's raw output
    ``(T, B, H)`` (before output dropout, for TAR). ``cell_args[name][l]`` goes to cell ``l``.
    """

    def __init__(self, vocabulary: int, hidden: int, cells: Sequence[nn.Module], *, dropout: float,
                 dropout_i: float, dropout_e: float):
        super().__init__()
        self.vocabulary, self.hidden = vocabulary, hidden
        self.dropout, self.dropout_i, self.dropout_e = dropout, dropout_i, dropout_e
        self.encoder = nn.Embedding(vocabulary, hidden)
        self.cells = nn.ModuleList(cells)
        self.decoder = nn.Linear(hidden, vocabulary)
        self.decoder.weight = self.encoder.weight  # weight tying
        with torch.no_grad():
            self.encoder.weight.uniform_(-INIT_RANGE, INIT_RANGE)
            self.decoder.bias.zero_()

    def init_hidden(self, batch: int) -> list[Tensor]:
        """Zero states, one ``(batch, H)`` per cell."""
        weight = self.encoder.weight
        return [weight.new_zeros(batch, self.hidden) for _ in self.cells]

    def embed(self, inputs: Tensor) -> Tensor:
        """``(T, B, H)`` embeddings with embedding dropout and locked input dropout (training only)."""
        if not self.training:
            return F.embedding(inputs, self.encoder.weight)
        return locked_dropout(embedded_dropout(self.encoder.weight, inputs, self.dropout_e), self.dropout_i)

    def decode(self, raw_output: Tensor) -> Tensor:
        """The logits ``(T * B, V)`` of the last cell's output after locked output dropout (training only)."""
        output = locked_dropout(raw_output, self.dropout) if self.training else raw_output
        return self.decoder(output.reshape(-1, self.hidden))

    def forward(self, inputs: Tensor, hidden: Sequence[Tensor],
                **cell_args: Sequence) -> tuple[Tensor, list[Tensor], Tensor]:
        raw = self.embed(inputs)
        finals = []
        for layer, cell in enumerate(self.cells):
            raw, last = cell(raw, hidden[layer], **{name: values[layer] for name, values in cell_args.items()})
            finals.append(last)
        return self.decode(raw), finals, raw


def corpus_loss(forward: Callable[[Tensor, list[Tensor]], tuple[Tensor, list[Tensor]]], data: Tensor,
                hidden: list[Tensor], bptt: int) -> float:
    """DARTS' ``evaluate``: the model run over the batchified split ``data`` in segments of ``bptt``
    rows, the state carried from segment to segment; ``forward(inputs, hidden) -> (logits, hidden)``.

        loss = sum_segments len(segment) * CE(segment) / rows

    (DARTS divides by all ``rows`` although the last row is only a target: a bias below 1/rows,
    kept so that the numbers compare.) Call it under ``torch.no_grad()`` with the model in eval mode."""
    rows = data.shape[0]
    total = torch.zeros((), dtype=torch.float64, device=data.device)
    for start in range(0, rows - 1, bptt):
        length = min(bptt, rows - 1 - start)
        inputs, targets = data[start: start + length], data[start + 1: start + 1 + length]
        logits, hidden = forward(inputs, hidden)
        total += F.cross_entropy(logits, targets.reshape(-1)).double() * length
    return float(total) / rows
