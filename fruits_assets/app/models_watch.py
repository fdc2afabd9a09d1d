"""Which published models the service answers with: the newest classifier (and its PCA) whose evaluation passed.

The service polls the output root's pointers. When the classifier's pointer moves, the new pair is loaded beside the
old one and swapped in whole (one reference), so a request sees one PCA and its classifier, never a mix. A
classifier is served only once its evaluation, published under `classifier_evaluation` and stamped with the
classifier's version and the accuracy floor, reaches that floor: a failed one never replaces the previous one.
"""

from __future__ import annotations

import io
import logging
import math
import threading
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow.compute as pc
from PIL import Image

from fruits_assets.app.predictor import Confidence, FruitPredictor, published_confidence
from spark_code.models.ml_models import PCA_VERSION, SAVED_AT, VERSION, published_notes
from spark_code.photos.layout import join_uri
from spark_code.storage.class_tables import published_stamps, read_arrow
from spark_code.storage.publish import WHOLE, current

log = logging.getLogger("fruits.serve")
WATCH_ERROR = "model watch: "


@dataclass(frozen=True)
class ServedModel:
    """A loaded PCA + classifier pair and what a client is told about it."""

    predictor: FruitPredictor
    location: str
    """The classifier's published folder: a new one means a new model."""
    field: dict[str, Any] | None = None
    """How it does on photos of the app's world (its published field evaluation), once there is one."""
    field_stamp: str | None = None
    confidence: Confidence | None = None
    """Its calibration, published with its field evaluation: how sure each answer is."""

    @property
    def info(self) -> dict[str, Any]:
        notes = self.predictor.notes
        return {
            "version": notes.get(VERSION),
            "published_at": notes.get(SAVED_AT),
            "pca_version": notes.get("pca_version"),
            "field": self.field,
        }


def field_stamp(output_root: str) -> str | None:
    """The published field evaluation's stamp (`<classifier version>:<digest>`), None when there is none."""
    return published_stamps(join_uri(output_root, "field_evaluation")).get(WHOLE, {}).get("stamp")


def field_figures(output_root: str, classifier_version: str | None, stamp: str | None) -> dict[str, Any] | None:
    """Photos, fruit and class accuracy of the published field evaluation when `stamp` is of this classifier (else
    None: a field evaluation of another classifier says nothing of this one)."""
    if not stamp or stamp.partition(":")[0] != classifier_version:
        return None
    table = read_arrow(join_uri(output_root, "field_evaluation"))
    if field_stamp(output_root) != stamp or not table.num_rows:  # published again while read: the next poll
        return None

    def share(left: str, right: str) -> float:
        return round(pc.mean(pc.equal(table[left], table[right]).cast("int8")).as_py(), 4)

    return {
        "photos": table.num_rows,
        "fruit_accuracy": share("fruit", "predicted_fruit"),
        "accuracy": share("label", "predicted"),
    }


def _blank_photo() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "white").save(buffer, "PNG")
    return buffer.getvalue()


def _evaluated_and_floor(stamp: str) -> tuple[str, float | None]:
    """The classifier version an evaluation's stamp starts with, and the accuracy floor its last field holds
    (`version:floor`, or `version:<settings digest>:floor`); None for a stamp whose last field is no floor, as
    `version:<settings digest>` (a floor is written by str(float), so it has a '.'; a hex digest never does)."""
    evaluated, _, rest = stamp.partition(":")
    last = rest.rpartition(":")[2]
    try:
        floor = float(last)
    except ValueError:
        return evaluated, None
    return evaluated, floor if "." in last and math.isfinite(floor) else None


def evaluation_verdict(output_root: str, classifier_version: str | None) -> tuple[str | None, bool]:
    """(None, _) when the classifier's published evaluation reached its floor; else (why it may not be served,
    whether that is final: evaluated and failed, rather than not evaluated yet or evaluated without a floor).

    The one quality gate of the app: `fruits serve` (ModelWatcher) and `fruits predict` both ask it."""
    base = join_uri(output_root, "classifier_evaluation")
    stamp = published_stamps(base).get(WHOLE, {}).get("stamp") or ""
    evaluated, floor = _evaluated_and_floor(stamp)
    if not evaluated or evaluated != classifier_version:
        return f"classifier {classifier_version} has no published evaluation yet", False
    if floor is None:  # judged again at the next poll: an evaluation published with its floor may replace it
        return f"classifier {classifier_version}: its published evaluation does not say its accuracy floor", False
    table = read_arrow(base)
    if (published_stamps(base).get(WHOLE, {}).get("stamp") or "") != stamp:  # published again while read
        return f"classifier {classifier_version}: its evaluation was being replaced", False
    accuracy = pc.mean(pc.equal(table["label"], table["predicted"]).cast("int8")).as_py() if table.num_rows else 0.0
    if accuracy < floor:
        return f"classifier {classifier_version}: accuracy {accuracy:.4f} is below its floor {floor:.4f}", True
    return None, False


class ModelWatcher:
    """Holds the served model and replaces it when a better-qualified one is published (polled in a thread)."""

    def __init__(self, output_root: str, poll_seconds: float = 2.0) -> None:
        self.output_root = output_root
        self.poll_seconds = poll_seconds
        self.current: ServedModel | None = None
        self.problem = "no model loaded yet"
        self._refused: str | None = None
        self._said: str | None = None
        """The last state logged (a refusal, a watch error): a poll that finds the same state logs nothing."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fruits-model-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
                if self._said and self._said.startswith(WATCH_ERROR):
                    log.info("model watch: the published models can be read again")
                    self._said = None
            except Exception as exc:  # a storage hiccup must not stop the watch; the current model keeps serving
                self._say(f"{WATCH_ERROR}{exc}")  # the detail for the operator, never for a client
                self.problem = self.problem if self.current else "cannot load the published models (see the log)"
            self._stop.wait(self.poll_seconds)

    def _say(self, message: str) -> None:
        """A warning when the watch's state changes, not at every poll that finds it unchanged (every 2 s)."""
        if message != self._said:
            log.warning("%s", message)
            self._said = message

    def refresh(self) -> bool:
        """Load and swap in the published classifier if it is new and qualified; True when it was swapped in."""
        swapped = self._refresh_model()
        served = self.current
        if served is not None:
            stamp = field_stamp(self.output_root)
            if stamp != served.field_stamp:  # the field evaluation of the served model came, or changed
                version = served.info["version"]
                figures = field_figures(self.output_root, version, stamp)
                confidence = published_confidence(self.output_root, version, served.predictor.labels)
                self.current = replace(served, field=figures, field_stamp=stamp, confidence=confidence)
        return swapped

    def _refresh_model(self) -> bool:
        """Load and swap in the published classifier if it is new and qualified."""
        location = current(join_uri(self.output_root, "fruit_classifier"))
        if location is None:
            self.problem = "no classifier published yet"
            return False
        if (self.current and location == self.current.location) or location == self._refused:
            return False
        version = (published_notes(join_uri(self.output_root, "fruit_classifier")) or {}).get(VERSION)
        verdict, final = evaluation_verdict(self.output_root, version)
        if verdict is not None:
            if self.current is None:
                self.problem = verdict
            self._say(f"not serving the new classifier: {verdict}")
            self._refused = location if final else None  # not evaluated yet: checked again at the next poll
            return False
        predictor = FruitPredictor(self.output_root)  # raises while a PCA and its classifier are half-published
        if predictor.notes.get(VERSION) != version:
            return False  # published again meanwhile: judged at the next poll
        probabilities = predictor.probabilities(_blank_photo())  # the model answers before it is served
        if not np.isfinite(probabilities).all():
            self._refused = location  # never loaded again
            raise ValueError(f"classifier {version} gives non-finite probabilities: not served")
        self.current = ServedModel(predictor, location, confidence=predictor.confidence)
        self._said = None
        log.info("serving classifier %s (PCA %s)", version, predictor.notes.get(PCA_VERSION))
        return True
