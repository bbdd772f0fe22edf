"""The Parquet lake: paths, atomic writes, import/clean/partition of listening logs."""
