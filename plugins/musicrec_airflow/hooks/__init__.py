"""Hooks of the musicrec DAGs: each owns one kind of connection (import them from their modules)."""
