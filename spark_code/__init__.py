"""Plain PySpark and TensorFlow code of the fruits platform, grouped by what it holds: `photos/` (reading the photos),
`features/` (embeddings and the embedding store), `models/` (PCA, classifier, saved models), `storage/` (local disk
and S3, publishing by pointer, Parquet outputs); `settings`, `errors` and `progress` serve them all.

Nothing here imports Dagster: these functions run the same under `spark-submit`, on EMR and inside Dagster assets.
"""
