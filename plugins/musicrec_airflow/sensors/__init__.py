"""Sensors of the musicrec DAGs."""
