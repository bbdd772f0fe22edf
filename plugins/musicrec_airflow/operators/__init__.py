from musicrec_airflow.operators.lake import (
    CleanListensOperator,
    DownloadDatasetOperator,
    PartitionListensOperator,
)

__all__ = ["CleanListensOperator", "DownloadDatasetOperator", "PartitionListensOperator"]
