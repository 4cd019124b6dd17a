"""How strongly each PR-DARTS term pulls on beta, epoch by epoch, under each preset's temperature schedule.

For ``pr-darts`` (paper: tau 10 -> 0.1, beta_0 = 0.5, sum over O_p in the path term) and
``pr-darts-code`` (official code: tau 1 -> 0.1, beta_0 ~ 1e-3 N(0, 1), hinged means over the
sampled selection), on the DARTS space, with beta held at the preset's initial value and tau at
the value of the listed epoch (of the preset's 200), the script prints:

* ``P``: the gate activation probability sigmoid(beta_0 - tau ln(-a/b)) (mean over the entries);
* ``dP/dbeta``: its derivative P(1 - P) in float64, and what autograd gives in float32 (``P`` rounds
  to exactly 1 once beta_0 - tau ln(-a/b) > 16.6, and the float32 gradient is then exactly 0);
* ``|grad skip|``, ``|grad non-skip|``, ``|grad path|``: the norms, over every beta of both cell
  types, of the gradients of lambda1 L_skip, lambda2 L_non-skip and lambda3 L_path, computed by
  dnas' regularizer (the code variant averaged over ``--samples`` sampled selections);
* ``|grad CE|``: for scale, the norm of the cross-entropy's gradient w.r.t. beta on the supernet
  at its initial weights (DARTS space, ``--channels``, ``--layers``, the embedded digits images,
  mean over ``--batches`` batches of 64), gates sampled by the preset's activation.

    python bench/pr_darts_terms.py                # every 10th epoch of both presets (~1 minute)
    python bench/pr_darts_terms.py --every 50     # fewer rows
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from dnas.bilevel.problem import BilevelProblem
from dnas.components import ACTIVATIONS, ARCH_REGULARIZERS
from dnas.config.resolve import resolve_config
from dnas.config.search import build_component
from dnas.data import BatchStream, load_dataset
from dnas.spaces import get_space
from dnas.supernet import build_supernet

TERMS = ("pr.skip", "pr.nonskip", "pr.path")


def norm(grads: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(g.double().square().sum()) for g in grads))


def term_gradients(problem: BilevelProblem, regularizer, samples: int) -> dict[str, float]:
    """Mean over ``samples`` gate samples of the gradient norm of each weighted term."""
    totals = dict.fromkeys(TERMS, 0.0)
    for _ in range(samples):
        terms = regularizer(problem, problem.activated())
        for name in TERMS:
            grads = torch.autograd.grad(terms[name], problem.arch, retain_graph=True, allow_unused=True)
            totals[name] += norm([g for g in grads if g is not None]) / samples
    return totals


def ce_gradient(problem: BilevelProblem, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    total = 0.0
    for x, y in batches:
        loss = F.cross_entropy(problem.forward(x), y)
        total += norm(torch.autograd.grad(loss, problem.arch)) / len(batches)
    return total


def table(method: str, args: argparse.Namespace, data) -> list[str]:
    cfg = resolve_config({"method": method, "space": "darts"})
    space = get_space("darts")
    activation = build_component(ACTIVATIONS, cfg.activation)
    activation.bind(space)
    regularizer = build_component(ARCH_REGULARIZERS, cfg.arch_regularizers[0])
    regularizer.bind(space)
    torch.manual_seed(0)
    net = build_supernet(space, num_classes=data.num_classes, in_channels=data.channels, channels=args.channels,
                         layers=args.layers, node_bn=activation.node_bn)
    generator = torch.Generator().manual_seed(0)
    alphas = torch.nn.ParameterDict({t: torch.nn.Parameter(activation.init_alpha(shape, generator))
                                     for t, shape in space.alpha_shapes().items()})
    problem = BilevelProblem(net, alphas, activation)
    stream = BatchStream(data, torch.arange(len(data.labels)), 64, seed=0, augment=None)
    batches = [next(stream) for _ in range(args.batches)]
    shift = math.log(-activation.a / activation.b)
    epochs = cfg.epochs
    rows = [f"**{method}** (tau {activation.tau_max:g} -> {activation.tau_min:g} over {epochs} epochs, "
            f"beta_0 {activation.init_mean:g} + {activation.init_std:g} N(0,1), regularizer variant "
            f"{regularizer.variant})", "",
            "| epoch | tau | P | dP/dbeta (float64) | dP/dbeta (float32 autograd) | \\|grad skip\\| "
            "| \\|grad non-skip\\| | \\|grad path\\| | \\|grad CE\\| |",
            "|---|---|---|---|---|---|---|---|---|"]
    listed = sorted({*range(0, epochs, args.every), epochs - 1})
    for epoch in listed:
        activation.on_epoch_start(epoch, epochs)
        beta = torch.cat([a.detach().flatten() for a in alphas.values()])
        p64 = torch.sigmoid(beta.double() - activation.tau * shift)
        b32 = beta.float().clone().requires_grad_(True)
        (g32,) = torch.autograd.grad(torch.sigmoid(b32 - activation.tau * shift).sum(), b32)
        grads = term_gradients(problem, regularizer, args.samples if regularizer.variant == "code" else 1)
        ce = ce_gradient(problem, batches)
        slope = float((p64 * (1 - p64)).mean())
        rows.append(f"| {epoch} | {activation.tau:.3f} | {float(p64.mean()):.6f} | {slope:.2e} "
                    f"| {float(g32.double().mean()):.2e} | {grads['pr.skip']:.2e} | {grads['pr.nonskip']:.2e} "
                    f"| {grads['pr.path']:.2e} | {ce:.2e} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=10, help="list every N-th epoch (and the last)")
    parser.add_argument("--samples", type=int, default=8, help="gate samples per epoch for the code variant")
    parser.add_argument("--batches", type=int, default=4, help="digits batches of 64 for the CE gradient")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("digits", split="train")
    for method in ("pr-darts", "pr-darts-code"):
        print("\n".join(table(method, args, data)) + "\n")


if __name__ == "__main__":
    main()
