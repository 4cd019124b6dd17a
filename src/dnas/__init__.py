"""dnas: differentiable neural architecture search that does not collapse."""

__version__ = "0.1.0"
