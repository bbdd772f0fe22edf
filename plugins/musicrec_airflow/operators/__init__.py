"""Thin operators of the musicrec DAGs, one module per step family (import them from their modules)."""
