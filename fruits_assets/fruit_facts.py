"""Facts the app shows about a recognised fruit, read from the reviewed `fruit_facts.json` shipped with the package.

Kept free of Dagster and Spark imports so the app-facing side can use it cheaply. The JSON holds the facts once per
fruit (`fruits`) and maps each Fruits-360 class label to its fruit and variety (`labels`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

FACTS_FILE = "fruit_facts.json"
UNKNOWN_DESCRIPTION = "No facts recorded for this fruit yet."

# "Tomato 4" -> "Tomato": the dataset numbers the varieties it cannot name.
_TRAILING_NUMBER = re.compile(r"\s+\d+$")


@dataclass(frozen=True)
class FruitFacts:
    """What the app shows for one class label; `known` is False for a label missing from the facts file."""

    label: str
    fruit: str
    variety: str | None
    family: str | None
    season: str | None
    description: str
    calories_kcal_per_100g: float | None
    vitamin_c_mg_per_100g: float | None
    known: bool


@cache
def _load() -> dict[str, Any]:
    """The parsed facts file, read once per process."""
    # Beside this module in a wheel and in an editable install alike (importlib.resources fails on the latter).
    text = (Path(__file__).parent / FACTS_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def known_labels() -> list[str]:
    """Every class label the facts file covers, sorted."""
    return sorted(_load()["labels"])


def facts_for(label: str) -> FruitFacts:
    """The facts for a class label; a label the file does not cover gets a fallback (known=False), never an error,
    so a model trained on new classes cannot break the app before the facts file catches up."""
    data = _load()
    entry = data["labels"].get(label)
    if entry is None:
        return FruitFacts(
            label=label,
            fruit=_TRAILING_NUMBER.sub("", label.strip()),
            variety=None,
            family=None,
            season=None,
            description=UNKNOWN_DESCRIPTION,
            calories_kcal_per_100g=None,
            vitamin_c_mg_per_100g=None,
            known=False,
        )
    fruit = data["fruits"][entry["fruit"]]
    return FruitFacts(
        label=label,
        fruit=entry["fruit"],
        variety=entry["variety"],
        family=fruit["family"],
        season=fruit["season"],
        description=fruit["description"],
        calories_kcal_per_100g=fruit["calories_kcal_per_100g"],
        vitamin_c_mg_per_100g=fruit["vitamin_c_mg_per_100g"],
        known=True,
    )
