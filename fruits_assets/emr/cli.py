"""`fruits emr setup|up|status|down`: the production cluster from `emr_config/`, from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from fruits_assets.defs.prod_env import BUCKET_ENV, CLUSTER_ENV, region


def add_emr_parser(commands: argparse._SubParsersAction) -> None:
    emr = commands.add_parser(
        "emr",
        help="create, inspect and terminate the EMR cluster described in emr_config/",
        description="AWS credentials come from boto3's standard chain; the region from --region, $AWS_REGION "
        "or eu-west-1.",
    ).add_subparsers(dest="emr", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--region", help="AWS region (default: $AWS_REGION or eu-west-1)")
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    bucket = argparse.ArgumentParser(add_help=False)
    bucket.add_argument("--bucket", default=os.environ.get(BUCKET_ENV), help=f"project bucket (default: ${BUCKET_ENV})")
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument(
        "cluster_id", nargs="?", default=os.environ.get(CLUSTER_ENV), help=f"cluster id (default: ${CLUSTER_ENV})"
    )
    cluster.add_argument("--no-wait", action="store_true", help="return without waiting for the new state")
    emr.add_parser(
        "setup",
        parents=[common, bucket],
        help="once per account, and again after editing emr_config/: the bucket (private, encrypted) and IAM roles",
    )
    up = emr.add_parser("up", parents=[common, bucket], help="upload the bootstrap files and start a cluster")
    up.add_argument("--name", default="fruits", help="cluster name (default fruits)")
    up.add_argument("--instance-type", default="m5.xlarge", help="master and core instance type (default m5.xlarge)")
    up.add_argument("--core-instances", type=int, default=2, help="number of core nodes (default 2)")
    up.add_argument("--idle-timeout", type=int, default=3600, help="auto-terminate after this many idle seconds")
    up.add_argument("--subnet", help="EC2 subnet id (default: the account's default VPC)")
    up.add_argument("--no-wait", action="store_true", help="return once the cluster is requested")
    status = emr.add_parser("status", parents=[common, cluster], help="state of the cluster and its steps")
    status.set_defaults(no_wait=True)
    emr.add_parser("down", parents=[common, cluster], help="terminate the cluster")


def _session(args: argparse.Namespace):
    import boto3

    return boto3.session.Session(region_name=args.region or region())


def _print(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key + ':':<18}{value}")


def run_emr(args: argparse.Namespace) -> int:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError, WaiterError

    from fruits_assets.emr import cluster as emr_cluster

    needs = "bucket" if args.emr in ("setup", "up") else "cluster_id"
    if not getattr(args, needs):
        flag = f"--bucket or ${BUCKET_ENV}" if needs == "bucket" else f"a cluster id or ${CLUSTER_ENV}"
        print(f"fruits: error: fruits emr {args.emr} needs {flag}", file=sys.stderr)
        return 2
    session = _session(args)
    try:
        if args.emr == "setup":
            emr_cluster.setup_bucket(session, args.bucket)
            result: dict[str, Any] = {"bucket": f"s3://{args.bucket}", **emr_cluster.setup_iam(session, args.bucket)}
        elif args.emr == "up":
            parameters = emr_cluster.ClusterParameters(
                bucket=args.bucket,
                name=args.name,
                master_instance_type=args.instance_type,
                core_instance_type=args.instance_type,
                core_instances=args.core_instances,
                idle_timeout_s=args.idle_timeout,
                subnet_id=args.subnet,
            )
            cluster_id = emr_cluster.cluster_up(session, parameters, wait=not args.no_wait)
            result = emr_cluster.cluster_status(session, cluster_id)
        elif args.emr == "status":
            result = emr_cluster.cluster_status(session, args.cluster_id)
        else:
            emr_cluster.cluster_down(session, args.cluster_id, wait=not args.no_wait)
            result = emr_cluster.cluster_status(session, args.cluster_id)
    except (ClientError, BotoCoreError, WaiterError, Boto3Error, emr_cluster.SetupConflict) as exc:
        print(f"fruits: error: {exc}", file=sys.stderr)
        return 1
    _print(args, result)
    return 0
