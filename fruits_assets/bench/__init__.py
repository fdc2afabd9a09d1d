"""`fruits bench`: benchmarks that measure their baseline and the project in one run and print ratios (`featurize`,
`scale`, `mainjob`, `predict`), the naive notebook baseline (`naive`, not project code) and the local Spark
standalone cluster they and the tests run on (`standalone_cluster`). They may import the main job, the app, the
Dagster code and `spark_code`; nothing but the command line and tests imports them."""
