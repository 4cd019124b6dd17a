"""PR-DARTS hard-concrete gate activation."""
