"""Plain PySpark and TensorFlow code of the fruits platform.

Nothing here imports Dagster: these functions run the same under `spark-submit`, on EMR and inside Dagster assets.
"""
