"""Airflow-facing adapters of musicrec: hooks own connections, operators/tasks delegate to the library."""
