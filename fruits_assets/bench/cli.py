"""Arguments and dispatch of `fruits bench ...` (heavy imports only when one runs)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from spark_code.settings import RANDOM_WEIGHTS, ModelSettings, chosen_output_root


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images-root", help="<root>/<split>/<class>/<image> or <root>/<class>/<image> (default: $FRUITS_IMAGES_ROOT)"
    )
    parser.add_argument(
        "--weights",
        help=f'a weights file, "imagenet" or "{RANDOM_WEIGHTS}" (untrained, timing only; default: '
        "$FRUITS_MODEL_WEIGHTS or imagenet)",
    )
    parser.add_argument("--alpha", type=float, help="MobileNetV2 alpha (default: $FRUITS_MODEL_ALPHA or 1.0)")
    parser.add_argument("--batch-size", type=int, default=ModelSettings.batch_size, help="images per model call")
    parser.add_argument(
        "--image-size", type=int, help=f"model input size (default: $FRUITS_IMAGE_SIZE or {ModelSettings.image_size})"
    )
    parser.add_argument(
        "--no-flip-average", dest="flip_average", action="store_false", help="embed images only, not their mirror"
    )


def add_bench_commands(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser("bench", help="benchmarks that print their figures").add_subparsers(
        dest="bench", required=True
    )
    bench_predict = bench.add_parser("predict", help="warm per-photo latency of fruits predict")
    bench_predict.add_argument("photos", nargs="+", metavar="PHOTO_OR_FOLDER", help="photos, or folders of photos")
    bench_predict.add_argument("--output-root", help="where the models are (default: $FRUITS_OUTPUT_ROOT)")
    bench_predict.add_argument("--limit", type=int, default=200, help="at most this many photos (default 200)")
    featurize = bench.add_parser(
        "featurize",
        help="bare model vs decode+model vs the Spark featurization vs the naive notebook pattern (images/s)",
    )
    _model_arguments(featurize)
    featurize.add_argument("--images", type=int, default=10_000, help="images to featurize (default 10000)")
    featurize.add_argument("--master", default="local[*]", help="Spark master (default local[*])")
    featurize.add_argument("--work-dir", help="where the sample and outputs go (default: a temporary folder)")
    featurize.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    featurize.add_argument("--no-ray", action="store_true", help="skip Ray Data's pattern (the bench extra)")
    scale = bench.add_parser(
        "scale", help="featurization wall time vs data size and workers, on a standalone cluster, with a fit"
    )
    _model_arguments(scale)
    scale.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    scale.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000], help="image counts")
    scale.add_argument("--cores-per-worker", type=int, default=1)
    scale.add_argument("--master", help="an existing cluster's master URL instead of local clusters (one --workers)")
    scale.add_argument("--work-dir", help="samples and outputs, seen by every executor (default: temporary)")
    scale.add_argument("--out-dir", default="bench-scale", help="where scaling.csv and scaling.png go")
    mainjob = bench.add_parser(
        "mainjob", help="fruits run on a few classes and on all: wall time vs the bare model, driver peak RSS"
    )
    _model_arguments(mainjob)
    mainjob.add_argument("--small-classes", type=int, default=10, help="classes of the small run (default 10)")
    mainjob.add_argument("--out-dir", default="bench-mainjob", help="the two runs' outputs and instance (replaced)")
    serve = bench.add_parser("serve", help="fruits serve under N concurrent clients: photos/s vs the bare model")
    serve.add_argument("photos", nargs="+", metavar="PHOTO_OR_FOLDER", help="photos, or folders of photos")
    serve.add_argument("--output-root", help="where the models are (default: $FRUITS_OUTPUT_ROOT)")
    serve.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    serve.add_argument("--requests", type=int, default=2000, help="requests under load (default 2000)")
    serve.add_argument("--limit", type=int, default=200, help="at most this many distinct photos (default 200)")
    overload = bench.add_parser(
        "overload",
        help="fruits serve under more clients than it can answer (127.0.0.1, bounded): memory over time, 200/503, "
        "requests lost, answers afterwards",
    )
    overload.add_argument("photos", nargs="+", metavar="PHOTO_OR_FOLDER", help="photos, or folders of photos")
    overload.add_argument("--output-root", help="where the models are (default: $FRUITS_OUTPUT_ROOT)")
    overload.add_argument("--clients", type=int, default=300, help="concurrent clients, at most 1000 (default 300)")
    overload.add_argument("--seconds", type=float, default=30.0, help="seconds of load, at most 120 (default 30)")
    overload.add_argument("--limit", type=int, default=200, help="at most this many distinct photos (default 200)")
    overload.add_argument(
        "--large-every", type=int, default=10, help="one client in N sends a 1-2 MB photo (0: none; default 10)"
    )
    overload.add_argument("--max-queue", type=int, help="fruits serve --max-queue (default: its own)")
    overload.add_argument("--max-inflight-bytes", type=int, help="fruits serve --max-inflight-bytes (default: its own)")
    overload.add_argument(
        "--service-dir", help="run the fruits serve of this checkout instead (an older commit's worktree: before/after)"
    )
    field = bench.add_parser(
        "field",
        help="the published classifier on photos of the app's world (a field root), by class and by fruit, and the "
        "confidence threshold for a target precision, beside the evaluation split",
    )
    field.add_argument("field_root", nargs="?", help="<root>/<split>/<class>/<photo> (default: $FRUITS_FIELD_ROOT)")
    field.add_argument("--output-root", help="where the models are (default: $FRUITS_OUTPUT_ROOT)")
    field.add_argument(
        "--calibration-split",
        default="train",
        help="the field split the temperature and threshold are fitted on, reported on the others (default train; "
        "'none': no calibration)",
    )
    field.add_argument("--precision", type=float, default=0.95, help="precision of confident answers (0.95)")
    field.add_argument(
        "--class-depth",
        type=int,
        default=int(os.environ.get("FRUITS_FIELD_CLASS_DEPTH", "0")),
        help="folders below a split that the class folders lie (default: $FRUITS_FIELD_CLASS_DEPTH or 0, the leaves)",
    )
    field.add_argument(
        "--feedback",
        action="store_true",
        help="instead: fruits run on --images-root from nothing, then again with the field root's --feedback-split "
        "as the feedback area, both evaluated on its --held-split: accuracies and the runs' time ratio",
    )
    field.add_argument("--feedback-split", default="train", help="with --feedback: the users' photos (train)")
    field.add_argument("--held-split", default="val", help="with --feedback: the photos never trained on (val)")
    field.add_argument("--feedback-weight", type=float, help="with --feedback: fruits run --feedback-weight")
    field.add_argument(
        "--work-dir", default="bench-feedback", help="with --feedback: the outputs and Dagster instance (replaced)"
    )
    _model_arguments(field)
    refit = bench.add_parser(
        "pca-refit", help="accuracy when the PCA was fitted without a share of the training photos (refit rule)"
    )
    refit.add_argument("--output-root", help="a finished main job's outputs (default: $FRUITS_OUTPUT_ROOT)")
    refit.add_argument("--shares", type=float, nargs="+", default=[0.05, 0.1, 0.2], help="shares left out of the fit")
    refit.add_argument(
        "--new-classes", type=int, nargs="*", default=[], help="numbers of whole classes left out of the fit"
    )
    accuracy = bench.add_parser(
        "accuracy",
        help="accuracy, macro F1 and model work per photo for each input size, with and without mirror averaging",
    )
    _model_arguments(accuracy)
    accuracy.add_argument("--sizes", type=int, nargs="+", default=[96, 128, 160, 192, 224], help="input sizes")
    accuracy.add_argument("--target", type=float, default=0.993, help="evaluation accuracy to reach (0.993)")
    accuracy.add_argument("--holdout", type=float, default=0.2, help="training share no fit sees (default 0.2)")
    accuracy.add_argument(
        "--work-dir", default="bench-accuracy", help="embeddings per size, kept and reused by later runs"
    )
    emr = bench.add_parser(
        "emr-estimate", help="the main job on EMR on paper (1M, 100M photos; 2, 10, 50 nodes) from figures here"
    )
    emr.add_argument("--cost-ms", type=float, required=True, help="featurization ms per photo per core (bench scale)")
    emr.add_argument("--overhead-s", type=float, required=True, help="fixed seconds of a run (bench scale's fit)")
    emr.add_argument("--main-job-factor", type=float, required=True, help="main job / featurization (bench mainjob)")
    emr.add_argument(
        "--touched-ms", type=float, required=True, help="ms per core per photo an incremental run touches unread"
    )
    emr.add_argument("--vcpus-per-node", type=int, default=4, help="vCPUs of a core node (m5.xlarge: 4)")
    emr.add_argument("--core-speed", type=float, default=1.0, help="a node vCPU's speed over a core here (1.0)")
    emr.add_argument("--s3-gets-per-s", type=float, default=50.0, help="small GETs per second per vCPU (50)")
    many = bench.add_parser(
        "many-classes",
        help="the sensor's tick, one main-job run and a rerun over N generated classes of 3 tiny photos: what grows "
        "with the classes",
    )
    many.add_argument("--classes", type=int, default=300, help="generated classes (default 300)")
    many.add_argument("--weights", help="a weights file or imagenet (default: $FRUITS_MODEL_WEIGHTS or imagenet)")
    many.add_argument("--alpha", type=float, help="MobileNetV2 alpha (default: $FRUITS_MODEL_ALPHA or 1.0)")
    many.add_argument(
        "--work-dir", default="bench-many-classes", help="the generated images and the outputs (must not exist)"
    )
    store = bench.add_parser(
        "store",
        help="the embedding store's cost to one incremental run after 1, 10, 50 earlier runs: the Delta table "
        "against the segments it replaced",
    )
    store.add_argument("--checkpoints", type=int, nargs="+", default=[1, 10, 50], help="earlier runs (1 10 50)")
    store.add_argument("--rows-per-run", type=int, default=600, help="new photos of each earlier run (600)")
    store.add_argument("--class-rows", type=int, default=500, help="photos of the timed run's class (500)")
    store.add_argument("--new-rows", type=int, default=5, help="of which new (5)")
    store.add_argument("--repeats", type=int, default=3, help="timed runs per checkpoint; the median is kept (3)")
    store.add_argument("--work-dir", default="bench-store", help="the two stores (replaced)")
    incremental = bench.add_parser(
        "incremental",
        help="fruits run, then a rerun with nothing new, then one with ~1%% new photos and a new class: wall time "
        "ratios and photos embedded",
    )
    _model_arguments(incremental)
    incremental.add_argument("--classes", type=int, default=20, help="classes of the first run (default 20)")
    incremental.add_argument("--new-share", type=float, default=0.01, help="share of photos held back (0.01)")
    incremental.add_argument(
        "--work-dir", default="bench-incremental", help="the images' copy, outputs and Dagster instance (replaced)"
    )


def _settings(args: argparse.Namespace) -> ModelSettings:
    alpha = args.alpha if args.alpha is not None else float(os.environ.get("FRUITS_MODEL_ALPHA", "1.0"))
    weights = args.weights or os.environ.get("FRUITS_MODEL_WEIGHTS", "imagenet")
    size = args.image_size or int(os.environ.get("FRUITS_IMAGE_SIZE", ModelSettings.image_size))
    return ModelSettings(
        weights=weights, alpha=alpha, image_size=size, batch_size=args.batch_size, flip_average=args.flip_average
    )


def _feedback_bench(args: argparse.Namespace, field_root: str) -> dict:
    """`fruits bench field --feedback`: two main jobs (fruits_assets.bench.feedback)."""
    from fruits_assets.bench.feedback import bench_feedback

    images_root = args.images_root or os.environ.get("FRUITS_IMAGES_ROOT")
    if not images_root:
        raise ValueError("give --images-root or set FRUITS_IMAGES_ROOT")
    return bench_feedback(
        Path(images_root),
        field_root,
        args.feedback_split,
        args.held_split,
        Path(args.work_dir),
        _settings(args),
        args.feedback_weight,
    )


def _photos(args: argparse.Namespace) -> list[Path]:
    return sorted(
        file
        for given in map(Path, args.photos)
        for file in (given.rglob("*") if given.is_dir() else [given])
        if file.is_file() and not file.name.startswith(".")
    )[: args.limit]


def _bench_predict(args: argparse.Namespace) -> dict:
    from fruits_assets.bench.predict import bench_predict

    return bench_predict(chosen_output_root(args.output_root), _photos(args))


def run_bench(args: argparse.Namespace) -> int:
    if args.bench == "predict":
        print(json.dumps(_bench_predict(args)))
        return 0
    if args.bench == "serve":
        from fruits_assets.bench.serve import bench_serve

        print(json.dumps(bench_serve(chosen_output_root(args.output_root), _photos(args), args.clients, args.requests)))
        return 0
    if args.bench == "overload":
        from fruits_assets.bench.overload import bench_overload

        serve_args = [
            *(["--max-queue", str(args.max_queue)] if args.max_queue is not None else []),
            *(["--max-inflight-bytes", str(args.max_inflight_bytes)] if args.max_inflight_bytes is not None else []),
        ]
        result = bench_overload(
            chosen_output_root(args.output_root),
            _photos(args),
            args.clients,
            args.seconds,
            args.large_every,
            serve_args,
            Path(args.service_dir) if args.service_dir else None,
        )
        print(json.dumps(result))
        return 0
    if args.bench == "field":
        from fruits_assets.bench.field import bench_field

        field_root = args.field_root or os.environ.get("FRUITS_FIELD_ROOT")
        if not field_root:
            print("fruits: error: give a field root or set FRUITS_FIELD_ROOT", file=sys.stderr)
            return 2
        split = None if args.calibration_split == "none" else args.calibration_split
        try:
            if args.feedback:
                result = _feedback_bench(args, field_root)
            else:
                result = bench_field(
                    chosen_output_root(args.output_root), field_root, split, args.precision, args.class_depth
                )
        except (ValueError, FileNotFoundError) as exc:  # a layout, a split or models that are not there
            print(f"fruits: error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(result))
        return 0
    if args.bench == "pca-refit":
        from fruits_assets.bench.common import bench_session
        from fruits_assets.bench.pca_refit import bench_pca_refit

        spark = bench_session("local[*]", ModelSettings.batch_size, {"spark.driver.memory": "6g"})
        print(json.dumps(bench_pca_refit(spark, chosen_output_root(args.output_root), args.shares, args.new_classes)))
        return 0
    if args.bench == "store":
        from fruits_assets.bench.common import bench_session
        from fruits_assets.bench.store import bench_store

        spark = bench_session("local[*]", ModelSettings.batch_size)
        result = bench_store(
            spark,
            Path(args.work_dir).resolve(),
            args.checkpoints,
            args.rows_per_run,
            args.class_rows,
            args.new_rows,
            args.repeats,
        )
        print(json.dumps(result))
        return 0
    if args.bench == "many-classes":
        from fruits_assets.bench.many_classes import bench_many_classes

        overrides = {"model_weights": args.weights, "model_alpha": args.alpha}
        work_dir = Path(args.work_dir)
        if work_dir.exists():
            print(f"fruits: error: --work-dir {work_dir} exists: give a new folder", file=sys.stderr)
            return 2
        result = bench_many_classes(work_dir, args.classes, {k: v for k, v in overrides.items() if v is not None})
        print(json.dumps(result))
        return 0
    if args.bench == "emr-estimate":
        from fruits_assets.bench.emr_estimate import EmrAssumptions, Measured, estimate, peer_comparison

        measured = Measured(args.cost_ms, args.overhead_s, args.main_job_factor, args.touched_ms)
        assumptions = EmrAssumptions(args.vcpus_per_node, args.core_speed, args.s3_gets_per_s)
        print(json.dumps({**estimate(measured, assumptions), "peer": peer_comparison(measured, assumptions)}))
        return 0
    images_root = Path(args.images_root or os.environ.get("FRUITS_IMAGES_ROOT", "images"))
    work_dir = Path(args.work_dir) if getattr(args, "work_dir", None) else None  # featurize, scale
    if args.bench == "featurize":
        from fruits_assets.bench.featurize import bench_featurize

        result = bench_featurize(
            images_root,
            args.images,
            _settings(args),
            work_dir,
            master=args.master,
            naive=not args.no_naive,
            ray=not args.no_ray,
        )
    elif args.bench == "incremental":
        from fruits_assets.bench.incremental import bench_incremental

        result = bench_incremental(images_root, Path(args.work_dir), args.classes, _settings(args), args.new_share)
    elif args.bench == "accuracy":
        from fruits_assets.bench.accuracy import bench_accuracy
        from fruits_assets.bench.common import bench_session

        spark = bench_session("local[*]", args.batch_size, {"spark.driver.memory": "6g"})
        result = bench_accuracy(
            spark, images_root, _settings(args), args.sizes, Path(args.work_dir), args.target, holdout=args.holdout
        )
    elif args.bench == "mainjob":
        from fruits_assets.bench.mainjob import bench_main_job

        result = bench_main_job(images_root, Path(args.out_dir), args.small_classes, _settings(args))
    else:
        from fruits_assets.bench.scale import bench_scale

        result = bench_scale(
            images_root,
            args.workers,
            args.sizes,
            _settings(args),
            Path(args.out_dir),
            master=args.master,
            cores_per_worker=args.cores_per_worker,
            work_dir=work_dir,
        )
    print(json.dumps(result))
    return 0
