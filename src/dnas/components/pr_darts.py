"""PR-DARTS group-sparsity and path-depth regularizer and discretizer."""
