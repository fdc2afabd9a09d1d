"""`fruits run`: the main job's options and its summary for a person (or as JSON), with exit codes that tell a
failure (1), bad input (2) and a failed quality gate (3) apart."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from fruits_assets.cli.console import RunConsole
from fruits_assets.defs.local_spark import start_in_background
from spark_code.photos.layout import LayoutError

QUALITY_GATE_EXIT = 3
"""`fruits run`'s exit code when every stage ran but the classifier is below the accuracy floor (1: a failure)."""


def add_run_parser(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        help="materialize what is missing or stale (raw images -> embeddings -> PCA -> classifier) on local Spark",
        description="Materialize every asset for every class (or the given ones) on local Spark, recomputing only "
        "what is missing or stale under the output root (--full: everything). Runs are recorded in the Dagster "
        "instance of $DAGSTER_HOME (default ./.dagster_home), which the UI shows. Options override the FRUITS_* "
        "environment variables.",
    )
    run.add_argument(
        "--images-root",
        help="<root>/<split>/<class>/<image> or <root>/<class>/<image> (default: $FRUITS_IMAGES_ROOT)",
    )
    run.add_argument("--output-root", help="where outputs go (default: $FRUITS_OUTPUT_ROOT or ./fruits-output)")
    run.add_argument("--classes", nargs="+", metavar="CLASS", help="only these classes (default: every class found)")
    run.add_argument(
        "--weights", dest="model_weights", help='"imagenet" or a weights file (default: $FRUITS_MODEL_WEIGHTS)'
    )
    run.add_argument(
        "--alpha", dest="model_alpha", type=float, help="MobileNetV2 alpha (default: $FRUITS_MODEL_ALPHA or 1.0)"
    )
    run.add_argument("--pca-k", type=int, help="fixed number of PCA components (default: chosen by --pca-variance)")
    run.add_argument("--image-size", type=int, help="model input size in pixels (default: $FRUITS_IMAGE_SIZE or 160)")
    run.add_argument("--pca-variance", type=float, help="target explained variance (default 0.95)")
    run.add_argument("--pca-max-k", type=int, help="most components --pca-variance may choose (default 100)")
    run.add_argument(
        "--no-flip-average",
        dest="flip_average",
        action="store_false",
        default=None,
        help="embed images only, not also their mirror image: half the work, lower accuracy",
    )
    run.add_argument(
        "--augment-views",
        type=int,
        help="augmented views of each training photo (other backgrounds, turned, scaled, lit, blurred), each embedded "
        "once and trained on beside it (default 0: none)",
    )
    run.add_argument("--training-split", help="split folder that trains (default: Training or train, any case)")
    run.add_argument(
        "--validation-split",
        help="split folder that chooses the penalty (default: Validation, val, valid or dev, any case)",
    )
    run.add_argument(
        "--evaluation-split",
        help="split folder that evaluates (default: Test, testing, eval or evaluation, any case; none: a hold-out of "
        "training images)",
    )
    run.add_argument("--holdout-fraction", type=float, help="share held out when no split evaluates (default 0.2)")
    run.add_argument(
        "--feedback-root",
        help="the feedback area: photos the app's users confirmed, trained on beside the images, never evaluated "
        "(default: $FRUITS_FEEDBACK_ROOT; none)",
    )
    run.add_argument(
        "--feedback-weight", type=float, help="what a feedback photo weighs in the classifier's fit (default 1)"
    )
    run.add_argument(
        "--feedback-sender-share",
        type=float,
        help="share of a class's feedback photos above which one sender floods it: a warning (default 0.5)",
    )
    run.add_argument(
        "--class-depth",
        type=int,
        help="folders below a split that the class folders lie (default 0: each branch's first folder holding photos)",
    )
    run.add_argument("--min-accuracy", type=float, help="accuracy floor of the quality check (default 0.95)")
    run.add_argument(
        "--field-root",
        help="photos of the app's world, never trained on: the classifier is also evaluated on them, by class and by "
        "fruit (default: $FRUITS_FIELD_ROOT; none)",
    )
    run.add_argument(
        "--field-class-depth",
        type=int,
        help="--class-depth of the field root (2: <split>/Fruit/Apple/.../<photo> is the class Apple; default 0)",
    )
    run.add_argument(
        "--min-field-fruit-accuracy",
        type=float,
        help="fruit accuracy on the field photos under which their check warns (default 0.6)",
    )
    run.add_argument(
        "--max-rejected-share",
        type=float,
        help="most files that may be rejected as undecodable, in the run and in each class (default 0.1)",
    )
    run.add_argument(
        "--pca-refit-share",
        type=float,
        help="refit the PCA when this share of training photos changed, or a class came or went (default 0.1)",
    )
    run.add_argument(
        "--classifier-penalties",
        help="L2 penalties the classifier chooses among on validation data, comma-separated (e.g. 1e-4,1e-6); one "
        "penalty: no search (default: 1e-2 to 1e-7, a decade apart)",
    )
    run.add_argument(
        "--classifier-search-share",
        type=float,
        help="search the classifier's penalty again when this share of training photos changed since the last "
        "search (default 0.1)",
    )
    run.add_argument(
        "--full",
        action="store_true",
        help="recompute every asset of every class, refit the PCA and search the classifier's penalty (default: only "
        "what is missing or stale; embeddings still come from the embedding store)",
    )
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    run.add_argument(
        "--verbose",
        action="store_true",
        help="show Spark's and Dagster's logs live, Spark's progress bars among them, instead of one progress "
        "display (default: they go to a log file under $DAGSTER_HOME/logs, whose path is printed)",
    )


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    fields = (
        "images_root",
        "model_weights",
        "model_alpha",
        "image_size",
        "pca_k",
        "pca_variance",
        "pca_max_k",
        "flip_average",
        "augment_views",
        "training_split",
        "validation_split",
        "evaluation_split",
        "holdout_fraction",
        "class_depth",
        "feedback_root",
        "feedback_weight",
        "feedback_sender_share",
        "min_accuracy",
        "field_root",
        "field_class_depth",
        "min_field_fruit_accuracy",
        "max_rejected_share",
        "pca_refit_share",
        "classifier_search_share",
        "classifier_penalties",
    )
    return {name: getattr(args, name) for name in fields if getattr(args, name) is not None}


def summary_lines(summary: dict[str, Any], seconds: float) -> list[str]:
    """The summary as `name: value` rows, then the outputs; names and values stay in columns whatever their
    length."""
    rows: list[tuple[str, str]] = [
        ("classes", str(summary["classes"])),
        ("images indexed", str(summary["images_indexed"])),
        ("images featurized", str(summary["images_featurized"])),
        ("images embedded", f"{summary['images_embedded']} (the others reused from the embedding store)"),
        ("images rejected", str(summary["images_rejected"])),
    ]
    if summary["pca_k"] is not None:
        rows.append(("PCA", f"k={summary['pca_k']}, explained variance {summary['pca_explained_variance']:.4f}"))
    if summary["training_images"]:
        rows.append(("trained on", summary["training_images"]))
    if summary["classifier_reg_param"] is not None:
        rows.append(("classifier", f"regParam {summary['classifier_reg_param']:g}, {summary['classifier_selection']}"))
    if summary["feedback_photos"]:
        rows.append(("feedback", f"{summary['feedback_photos']} photo(s) of the app's users trained on"))
    if summary["accuracy"] is not None:
        rows.append(("evaluation", f"accuracy {summary['accuracy']:.4f}, macro F1 {summary['macro_f1']:.4f}"))
        rows.append(("evaluated on", f"{summary['evaluation_images']} images, {summary['evaluated_on']}"))
    if summary["field_fruit_accuracy"] is not None:
        rows.append(
            (
                "field",
                f"fruit accuracy {summary['field_fruit_accuracy']:.4f}, class accuracy {summary['field_accuracy']:.4f} "
                f"on {summary['field_images']} photos of {summary['field_root']}",
            )
        )
    rows += [(f"{name} skipped", reason) for name, reason in summary["skipped"].items()]
    rows.append(("checks", f"{sum(summary['checks'].values())}/{len(summary['checks'])} passed"))
    rows += [("ran", step) for step in summary["steps"]] or [("ran", "nothing: every output is up to date")]
    if summary["stage_seconds"]:
        rows.append(("stage times", ", ".join(f"{name} {s:.1f} s" for name, s in summary["stage_seconds"].items())))
    warned = set(summary["warnings"])
    rows += [("failed check", name) for name, passed in summary["checks"].items() if not passed and name not in warned]
    rows += [("warning", f"check {name} failed (a warning)") for name in summary["warnings"]]
    if summary.get("log_file"):
        rows.append(("log", summary["log_file"]))
    rows.append(("outputs under", summary["output_root"]))
    outputs = [(name, path) for name, path in summary["outputs"].items()]
    errors = [("error", summary["error"])] if summary["error"] else []
    width = max(len(name) for name, _ in rows + errors) + 2
    output_width = max((len(name) for name, _ in outputs), default=0) + 2
    status = "succeeded" if summary["success"] else "FAILED"
    return [
        f"fruits run {status} in {seconds:.1f} s",
        *(f"  {name + ':':<{width}}{value}" for name, value in rows),
        *(f"    {name:<{output_width}}{path}" for name, path in outputs),
        *(f"  {name + ':':<{width}}{value}" for name, value in errors),
    ]


def _run(args: argparse.Namespace, console: RunConsole) -> tuple[dict[str, Any] | None, str | None]:
    """The main job under the console: its summary, or the error that stopped it before it ran (bad input)."""
    try:
        start_in_background(console_progress=args.verbose)  # the session starts while Dagster is imported
    except ValueError as exc:  # FRUITS_SPARK_CONF that is no JSON object of settings
        return None, str(exc)
    from fruits_assets.main_job import InvalidSettingsError, run_main_job  # heavy imports once arguments are valid

    started = time.perf_counter()
    try:
        result = run_main_job(
            _overrides(args), args.classes, args.output_root, full=args.full, listener=console.listener
        )
    except (LayoutError, FileNotFoundError, InvalidSettingsError) as exc:  # SplitError is a LayoutError
        return None, str(exc)
    summary = result.as_dict()
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["log_file"] = str(console.log_path) if console.log_path else None
    return summary, None


def run_command(args: argparse.Namespace) -> int:
    with RunConsole(verbose=args.verbose) as console:  # the logs go to a file, the terminal shows the progress
        summary, error = _run(args, console)
        console.finish(error, ran=bool(summary and summary["steps"]))
    if summary is None:
        print(f"fruits: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
    else:
        print("\n".join(summary_lines(summary, summary["seconds"])))
    if summary["quality_gate_failed"]:
        print(
            f"fruits: quality gate: accuracy {summary['accuracy']:.4f} is below the floor (--min-accuracy, "
            "FRUITS_MIN_ACCURACY); every stage ran",
            file=sys.stderr,
        )
        return QUALITY_GATE_EXIT
    if not summary["success"]:
        warned = set(summary["warnings"])
        failed = ", ".join(name for name, passed in summary["checks"].items() if not passed and name not in warned)
        print(f"fruits: run failed: {summary['error'] or 'failed check(s) ' + failed}", file=sys.stderr)
        return 1
    return 0
