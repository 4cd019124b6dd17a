"""Lambda-DARTS per-cell gradient-alignment weight regularizer."""
