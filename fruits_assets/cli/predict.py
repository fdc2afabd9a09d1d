"""`fruits predict`: the fruit in each photo, from the published models, with its facts (no Spark)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from spark_code.errors import PermanentError
from spark_code.models.fruit_facts import facts_for
from spark_code.photos.layout import is_remote, join_uri
from spark_code.photos.listing import folder_entries
from spark_code.settings import chosen_output_root


def add_predict_parser(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict",
        help="name the fruit in photos with the trained classifier (no Spark needed)",
        description="Top classes of each photo (JPEG, HEIC, PNG, WebP..., any size) with the facts of the best one, "
        "from the models materialized under the output root.",
    )
    predict.add_argument(
        "photos",
        nargs="+",
        metavar="PHOTO",
        help="a photo, or a folder (an s3:// prefix ending in '/') whose every visible file is a photo to name",
    )
    predict.add_argument("--output-root", help="where the models are (default: $FRUITS_OUTPUT_ROOT or ./fruits-output)")
    predict.add_argument("--top", type=int, default=3, help="how many classes to show (default 3)")
    predict.add_argument("--json", action="store_true", help="print one JSON object per photo on stdout")


def _facts_lines(label: str) -> list[str]:
    facts = facts_for(label)
    lines = [f"    {facts.fruit}" + (f" ({facts.variety})" if facts.variety else "") + f": {facts.description}"]
    details = [
        f"family {facts.family}" if facts.family else "",
        f"season {facts.season}" if facts.season else "",
        f"{facts.calories_kcal_per_100g:g} kcal/100 g" if facts.calories_kcal_per_100g is not None else "",
        f"vitamin C {facts.vitamin_c_mg_per_100g:g} mg/100 g" if facts.vitamin_c_mg_per_100g is not None else "",
    ]
    if any(details):
        lines.append("    " + "; ".join(d for d in details if d))
    return lines


def photo_paths(arguments: list[str]) -> tuple[list[str], list[str]]:
    """Each PHOTO argument, a folder replaced by its visible files (hidden ones skipped, as the pipeline's listing
    skips them; sorted, any depth), and the folders that hold none."""
    photos: list[str] = []
    empty: list[str] = []
    for argument in arguments:
        if not (argument.endswith("/") if is_remote(argument) else os.path.isdir(argument)):
            photos.append(argument)
            continue
        inside = sorted(relative for relative, _, _ in folder_entries(argument))
        photos += [join_uri(argument, relative) for relative in inside]
        if not inside:
            empty.append(argument)
    return photos, empty


def predict_command(args: argparse.Namespace) -> int:
    from fruits_assets.app.models_watch import evaluation_verdict
    from fruits_assets.app.predictor import FruitPredictor  # TensorFlow is imported only when predicting
    from spark_code.models.ml_models import VERSION

    output_root = chosen_output_root(args.output_root)
    try:
        predictor = FruitPredictor(output_root, top=args.top)
    except (FileNotFoundError, PermanentError) as exc:  # no models yet, or a PCA and classifier that do not match
        print(f"fruits: error: {exc}", file=sys.stderr)
        return 2
    # The quality gate of `fruits serve` (the same function), on the very classifier loaded: no answer from one
    # whose evaluation is below its floor, or not published yet.
    refusal, _ = evaluation_verdict(output_root, predictor.notes.get(VERSION))
    if refusal is not None:
        print(f"fruits: error: not answering with the published classifier: {refusal}", file=sys.stderr)
        return 2
    photos, empty = photo_paths(args.photos)
    for folder in empty:
        print(f"fruits: {folder}: no photo in this folder", file=sys.stderr)
    failed = len(empty)
    for photo in photos:
        prediction = predictor.predict(photo)
        if prediction.error:
            failed += 1
            print(f"fruits: {photo}: {prediction.error}", file=sys.stderr)
            if args.json:
                print(json.dumps({"photo": photo, "error": prediction.error}))
            continue
        best = prediction.top[0][0]
        if args.json:
            top = [{"label": label, "probability": p} for label, p in prediction.top]
            sure = {"confidence": prediction.confidence, "confident": prediction.confident}
            print(json.dumps({"photo": photo, "top": top, **sure, "facts": asdict(facts_for(best))}))
        else:
            if prediction.confident is False:  # calibrated on field photos: not sure enough to name it
                print(f"{photo}: not sure ({prediction.confidence:.1%} sure of the fruit); best guesses:")
            print(f"{photo}: {best} ({prediction.top[0][1]:.1%})")
            print("  " + ", ".join(f"{label} {p:.1%}" for label, p in prediction.top))
            print("\n".join(_facts_lines(best)))
    return 1 if failed else 0
