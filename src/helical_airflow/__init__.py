"""helical-airflow: run Helical foundation models on whole .h5ad datasets, shard by shard."""

__version__ = "0.1.0"
