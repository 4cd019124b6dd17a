"""Training a derived cell from scratch: the evaluation networks (:mod:`.network`), one training step
without I/O (:mod:`.step`), a training run in a run directory (:mod:`.run`), parameter and
multiply-add counts (:mod:`.counting`)."""
