"""The app's side: naming the fruit in a photo from the published models without Spark (`predictor`), and the service
that tells about it (its facts: spark_code.models.fruit_facts). It imports `spark_code` only, never Dagster: `fruits
predict` and the app's service use it."""
