"""The Dagster code location, by what each module defines: `assets/` (the assets by stage), `checks` (their asset
checks), `partitions` (one partition per fruit class), `sensors` (discovering classes), `automation` (declarative
automation and code versions), `staleness` (what is stale under an output root, which the main job plans from),
`steps` (what wraps each asset's step: progress lines, failures that are not retried), `io_managers`, `resources`
(settings and Spark sessions), `deployments` (the resource set of each deployment), `emr_resources` and `prod_env`
(the `prod` deployment's step launcher and environment), `local_spark` (the local session's settings) and `plots`.
`fruits_assets.definitions` merges them into the one Definitions object.

This package's `__init__` imports nothing: `fruits run` imports `local_spark` before Dagster, and `fruits emr`
reads `prod_env` without loading Dagster."""
