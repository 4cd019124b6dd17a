"""``dnas train``: a training run, the algorithm of :mod:`dnas.retrain.step` driven by the runner.

A training run directory holds ``config.yaml``, ``env.json``, ``genotype.json``, ``metrics.jsonl``
(step records every ``log_every`` steps, an epoch record with the test accuracy every
``eval_every`` epochs), ``checkpoint.pt`` (full state, written atomically every
``checkpoint_every`` steps and at every epoch end) and at the end ``result.json`` (test accuracy
as a fraction, parameter count without the auxiliary head, multiply-adds; see
:mod:`dnas.retrain.counting`; a recurrent genotype: validation and test perplexity). Running
again with the same directory resumes from the checkpoint to exactly the weights an uninterrupted
run reaches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from dnas.config.train import TrainConfig
from dnas.errors import expect_type
from dnas.retrain.language_step import LanguageTrainStep
from dnas.retrain.network import check_genotype, family_of
from dnas.retrain.step import TrainStep
from dnas.runtime.files import GENOTYPE, RESULT
from dnas.runtime.runner import Runner
from dnas.spaces import Genotype


class Trainer(Runner[dict[str, Any]]):
    """A training run of ``genotype`` in directory ``out``; :meth:`run` resumes from ``out/checkpoint.pt``
    when present. After ``open()``, ``trainer.algorithm`` is the :class:`~dnas.retrain.step.TrainStep`
    (a recurrent genotype: the :class:`~dnas.retrain.language_step.LanguageTrainStep`)."""

    kind: ClassVar[str] = "train"
    noun: ClassVar[str] = "training run"
    resume_free = Runner.resume_free | {"genotype"}  # the cell is compared as a cell, not as the text naming it
    epoch_meter = True

    def __init__(self, cfg: TrainConfig, genotype: Genotype, out: str | Path, progress: bool = True):
        expect_type("Trainer's cfg (resolve_train_config's result)", cfg, TrainConfig)
        expect_type("Trainer's genotype", genotype, Genotype)
        expect_type("Trainer's out", out, str, Path)
        check_genotype(genotype)
        super().__init__(cfg, out, progress=progress, own_files={GENOTYPE, RESULT}, results={RESULT},
                         start_files={GENOTYPE: genotype.to_dict()})
        self.cfg: TrainConfig = cfg
        self.genotype = genotype

    def build(self) -> TrainStep | LanguageTrainStep:
        self.algorithm: TrainStep | LanguageTrainStep
        if family_of(self.genotype) == "rnn":  # a word-level language model
            self.algorithm = LanguageTrainStep(self.cfg, self.genotype, device=self.device, group=self.group)
        else:
            self.algorithm = TrainStep(self.cfg, self.genotype, device=self.device, group=self.group)
        return self.algorithm

    @property
    def description(self) -> str:
        return f"train {self.out.name}"

    def differences(self, state: dict[str, Any]) -> list[str]:
        return ["the genotype"] if state["genotype"] != self.genotype.to_dict() else []

    def run(self, stop_after: int | None = None) -> dict[str, Any] | None:
        """Train to the end and return the result (also written to ``result.json``).

        ``stop_after``: stop once the run has taken that many steps in total, with the checkpoint
        saved, and return None (what an interruption does; running again resumes).
        """
        return self.finish() if self.run_steps(stop_after) else None

    def outcome(self, files: dict[str, Any]) -> dict[str, Any]:
        return files[RESULT]
