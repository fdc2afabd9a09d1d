"""`fruits bench predict`: warm latency of naming the fruit in one photo, the way the app asks for it."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from fruits_assets.app.predictor import FruitPredictor


def bench_predict(output_root: str, photos: list[Path], warmup: int = 3) -> dict[str, float]:
    """Load the models once, warm up, then time `predict` photo by photo (file read, decode, model, PCA, softmax)."""
    started = time.perf_counter()
    predictor = FruitPredictor(output_root)
    load_seconds = time.perf_counter() - started
    for photo in photos[:warmup]:
        predictor.predict(str(photo))
    timings = []
    for photo in photos:
        started = time.perf_counter()
        prediction = predictor.predict(str(photo))
        timings.append((time.perf_counter() - started) * 1000)
        if prediction.error:
            raise ValueError(f"{photo}: {prediction.error}")
    timings.sort()
    return {
        "photos": len(timings),
        "load_s": round(load_seconds, 2),
        "median_ms": round(statistics.median(timings), 1),
        "p90_ms": round(timings[int(0.9 * (len(timings) - 1))], 1),
        "max_ms": round(timings[-1], 1),
    }
