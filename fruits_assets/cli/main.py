"""`fruits`: the platform's command line. It parses and dispatches only: `fruits run` (the main job), `fruits
predict` (the app's predictor), `fruits serve` (the app's service), `fruits feedback` (the photos users confirmed),
`fruits bench` (benchmarks), `fruits emr` (the production cluster)."""

from __future__ import annotations

import argparse
import os
import sys

from fruits_assets.bench.cli import add_bench_commands, run_bench
from fruits_assets.cli.feedback import add_feedback_parser, feedback_command
from fruits_assets.cli.predict import add_predict_parser, predict_command
from fruits_assets.cli.run import add_run_parser, run_command
from fruits_assets.cli.serve import add_serve_parser, serve_command
from fruits_assets.emr.cli import add_emr_parser, run_emr


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fruits", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    add_run_parser(commands)
    add_predict_parser(commands)
    add_serve_parser(commands)
    add_feedback_parser(commands)
    add_bench_commands(commands)
    add_emr_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return {
        "run": run_command,
        "predict": predict_command,
        "serve": serve_command,
        "feedback": feedback_command,
        "bench": run_bench,
        "emr": run_emr,
    }[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
