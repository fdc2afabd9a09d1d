"""EMR operations for the `prod` deployment: the cluster and its IAM as code (`cluster`, from `emr_config/`), and
`fruits emr setup|up|status|down` (`cli`). The step launcher's resources that run each asset step on the cluster
belong to the code location (`fruits_assets.defs.emr_resources`, with the deployment's environment names in
`fruits_assets.defs.prod_env`). The command line imports `cli`; nothing here imports the command line."""
