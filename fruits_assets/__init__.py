"""The fruits platform around its Spark code: the Dagster code location (`definitions`, `assets/` by stage,
`checks`, `partitions`, `sensors`, `resources`, `io_managers`, `failures`, `plots`), the main job (`main_job`), and
the rooms that use them: `cli/` (the `fruits` command), `app/` (predicting for the app, no Dagster), `bench/`
(benchmarks), `emr/` (the `prod` deployment). Imports flow one way: command line -> main job, app, benchmarks, EMR
operations -> Dagster definitions and assets -> `spark_code`."""
