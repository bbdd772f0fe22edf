"""musicrec: the domain library of the music-recommendation data platform.

Plain Python with no Airflow imports, so every piece is unit-testable on its own.
The Airflow adapters live in ``plugins/musicrec_airflow``.
"""

__version__ = "0.1.0"
