"""Parameter and multiply-add counts of a network, with the conventions the NAS papers use.

Parameters: every element of every ``nn.Parameter`` (convolution and linear weights and biases,
BatchNorm scale and shift; BatchNorm running statistics are buffers and do not count), except
those of modules whose name contains ``auxiliary`` — DARTS and its successors report the
evaluation network without its auxiliary head, which exists only during training.

Multiply-adds (the "mult-adds" / "FLOPs" of the DARTS, NASNet and PR-DARTS tables): counted while
the network runs on one input of batch size 1 (:mod:`dnas.diagnostics.flops`), in eval mode, so the auxiliary
head (training only) is not run. Per call, a convolution costs

    MACs = H_out * W_out * C_out * (C_in / groups) * k_h * k_w

and a linear layer ``in_features * out_features``. Biases, BatchNorm, activations, pooling and
additions are not counted. NAS-Bench-201's published "FLOPs" additionally count the classifier's
bias (``num_classes`` adds), so they equal ``MACs + num_classes`` (checked in tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dnas.diagnostics.flops import count_work

EXCLUDED = ("auxiliary",)


def count_parameters(model: nn.Module, exclude: Sequence[str] = EXCLUDED) -> int:
    """Number of parameter elements, skipping parameters whose qualified name contains an ``exclude`` word."""
    return sum(p.numel() for name, p in model.named_parameters() if not any(word in name for word in exclude))


def count_multiply_adds(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-adds of one forward pass on a single ``input_shape = (C, H, W)`` image.

    Half the forward FLOPs that :func:`dnas.diagnostics.flops.count_work` counts (convolutions and matrix
    products, 2 FLOPs per multiply-add). The model runs in eval mode under ``no_grad`` on the
    device of its parameters; its training flag is restored afterwards.
    """
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), count_work() as work:
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
    return work.flops // 2
