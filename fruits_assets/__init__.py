"""The fruits platform around its Spark code: the Dagster code location (`defs/`, merged into one Definitions object
by `definitions`), the main job (`main_job`, which runs the code location's asset graph in process), and the rooms
that use them: `cli/` (the `fruits` command), `app/` (predicting for the app, no Dagster), `bench/` (benchmarks),
`emr/` (the `prod` cluster's operations). Imports flow one way: command line -> main job, app, benchmarks, EMR
operations -> Dagster code location -> `spark_code`."""
