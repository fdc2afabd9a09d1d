"""`fruits`: the platform's command line (`fruits run` materializes every asset for every class)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from spark_code.layout import LayoutError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fruits", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="materialize every asset (raw images -> embeddings -> PCA -> reduced features) on local Spark",
        description="Materialize every asset for every class (or the given ones) on local Spark. "
        "Options override the FRUITS_* environment variables.",
    )
    run.add_argument("--images-root", help="<root>/<split>/<class>/<image> (default: $FRUITS_IMAGES_ROOT)")
    run.add_argument("--output-root", help="where outputs go (default: $FRUITS_OUTPUT_ROOT or ./fruits-output)")
    run.add_argument("--classes", nargs="+", metavar="CLASS", help="only these classes (default: every class found)")
    run.add_argument(
        "--weights", dest="model_weights", help='"imagenet" or a weights file (default: $FRUITS_MODEL_WEIGHTS)'
    )
    run.add_argument(
        "--alpha", dest="model_alpha", type=float, help="MobileNetV2 alpha (default: $FRUITS_MODEL_ALPHA or 1.0)"
    )
    run.add_argument("--pca-k", type=int, help="fixed number of PCA components (default: chosen by --pca-variance)")
    run.add_argument("--pca-variance", type=float, help="target explained variance (default 0.95)")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    fields = ("images_root", "model_weights", "model_alpha", "pca_k", "pca_variance")
    return {name: getattr(args, name) for name in fields if getattr(args, name) is not None}


def _print_summary(summary: dict[str, Any], seconds: float) -> None:
    status = "succeeded" if summary["success"] else "FAILED"
    lines = [
        f"fruits run {status} in {seconds:.1f} s",
        f"  classes:            {summary['classes']}",
        f"  images indexed:     {summary['images_indexed']}",
        f"  images featurized:  {summary['images_featurized']}",
        f"  images rejected:    {summary['images_rejected']}",
    ]
    if summary["pca_k"] is not None:
        lines.append(
            f"  PCA:                k={summary['pca_k']}, explained variance {summary['pca_explained_variance']:.4f}"
        )
    lines.append(f"  checks:             {sum(summary['checks'].values())}/{len(summary['checks'])} passed")
    lines += [f"  failed check:       {name}" for name, passed in summary["checks"].items() if not passed]
    lines.append(f"  outputs under:      {summary['output_root']}")
    lines += [f"    {name:<18}{path}" for name, path in summary["outputs"].items()]
    if summary["error"]:
        lines.append(f"  error:              {summary['error']}")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from fruits_assets.main_job import run_main_job  # heavy imports only once the arguments are valid

    started = time.perf_counter()
    try:
        summary = run_main_job(_overrides(args), args.classes, args.output_root).as_dict()
    except (LayoutError, FileNotFoundError) as exc:
        print(f"fruits: error: {exc}", file=sys.stderr)
        return 2
    summary["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary, summary["seconds"])
    return 0 if summary["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
