"""Run under ``torchrun`` by tests/test_distributed.py: tiny searches and a training run, each rank
writing a hash of its weights, architecture weights and optimizer states.

    torchrun --nproc_per_node 2 tests/ddp_worker.py OUT MODE [RUN]

MODE ``components``: one search per method (every component that reduces something) and one
``dnas train``; MODE ``crash``: a search that dies after its first checkpoint (rank 1 exits hard
at step 5); MODE ``resume``: the same search to its end.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch

from dnas.bilevel.run import Search
from dnas.config.resolve import resolve_config
from dnas.config.train import resolve_train_config
from dnas.errors import DnasError
from dnas.retrain.run import Trainer

#: DNAS_TEST_DEVICE=cuda: the same runs on CUDA devices over NCCL (tests/test_device.py)
DEVICE = os.environ.get("DNAS_TEST_DEVICE", "cpu")
TINY = ["channels=4", "layers=1", "max_images=192", "log_every=2", "checkpoint_every=3", f"device={DEVICE}"]
METHODS = {
    "darts": [],
    "darts-2nd": ["estimator.hvp=fd"],
    "amended-darts": ["estimator.hvp=fd"],
    "lambda-darts": ["layers=2", "weight_regularizers.lambda.lam=0.5", "alignment_every=1"],
    "pr-darts": [],
    "darts-prime": ["schedule.threshold=1e9"],  # take alpha steps from the start
    "darts-prime-v1": ["schedule.threshold=1e9", "arch_regularizers.admm.admm_freq=2"],
    "gdas": [],  # one Gumbel sample per step, the same on every rank
    "sdarts-adv": ["perturbation.steps=2"],  # the attack's random start and steps
    "fair-darts": [],
    "beta-darts": [],
    "darts-minus": [],
    "pc-darts": ["warmup_epochs=1"],  # edge logits, partial channels
    "drnas": ["channels=8"],  # a Dirichlet sample per step; pruned and widened between its two epochs
}


def tiny_trainer(out: Path) -> Trainer:
    """A two-epoch ``dnas train`` of a fixed NB201 cell on 128 digits images, on ``DEVICE`` (also
    tests/test_device.py's)."""
    cfg, resolved = resolve_train_config("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|"
                                         "avg_pool_3x3~2|", {"dataset": "digits", "epochs": 2},
                                         ["channels=4", "layers=1", "batch_size=32", "max_images=128",
                                          "max_test_images=64", "log_every=2", f"device={DEVICE}"])
    return Trainer(cfg, resolved.genotype, out, progress=False)


def digest(*objects) -> str:
    """sha256 over every tensor in ``objects`` (state dicts, nested), in a fixed order."""
    h = hashlib.sha256()

    def visit(obj) -> None:
        if isinstance(obj, torch.Tensor):
            h.update(obj.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(obj, dict):
            for key in sorted(obj, key=str):
                h.update(str(key).encode())
                visit(obj[key])
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item)
        else:
            h.update(repr(obj).encode())

    for obj in objects:
        visit(obj)
    return h.hexdigest()


def search_digest(search: Search) -> str:
    step = search.algorithm
    return digest(step.problem.net.state_dict(), step.problem.alphas.state_dict(), step.w_opt.state_dict(),
                  step.a_opt.state_dict(), {k: c.state_dict() for k, c in step.components.items()})


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    lines = []
    if mode == "components":
        for method, extra in METHODS.items():
            cfg = resolve_config({"method": method, "epochs": 2, "batch_size": 16}, [*TINY, *extra])
            search = Search(cfg, out / method, progress=False)
            search.run()
            lines.append(f"{method} {search_digest(search)} {search.algorithm.arch_steps}")
        trainer = tiny_trainer(out / "train")
        result = trainer.run()
        step = trainer.algorithm
        lines.append(f"train {digest(step.net.state_dict(), step.optimizer.state_dict())} {result['test_acc']}")
    else:
        cfg = resolve_config({"method": "darts", "epochs": 3, "batch_size": 16}, TINY)
        search = Search(cfg, out / sys.argv[3], progress=False).open()
        while not search.done:
            search.step()
            if mode == "crash" and search.global_step == 5 and rank == 1:
                os._exit(3)  # a rank dies without a word
        search.finish()
        lines.append(f"run {search_digest(search)}")
    name = mode if mode == "components" else sys.argv[3]
    (out / f"hash-{name}-{rank}").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    try:
        main()
    except DnasError as err:  # as the dnas command line reports user errors: one sentence, no traceback
        print(f"dnas: error: {err}", file=sys.stderr)
        sys.exit(2)
