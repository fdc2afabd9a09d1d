"""Facts the app shows about a recognised fruit, read from the reviewed `fruit_facts.json` shipped with the package.

Kept free of Dagster and Spark imports so the app-facing side can use it cheaply; it lies in spark_code so that the
pipeline scores its answers by fruit (the field evaluation) with the same facts the app tells. The JSON holds the
facts once per fruit (`fruits`) and maps each Fruits-360 class label to its fruit and variety (`labels`).

Users bring datasets whose class folders are named their own way (`apple_braeburn_1`, `APPLE-BRAEBURN`, `Bánana`), so
a label the file does not hold verbatim is looked up again in a normalised form before it falls back to "unknown".
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

FACTS_FILE = "fruit_facts.json"
UNKNOWN_DESCRIPTION = "No facts recorded for this fruit yet."

# "Tomato 4" -> "Tomato": the dataset numbers the varieties it cannot name.
_TRAILING_NUMBER = re.compile(r"\s+\d+$")
# The same in the fallback, where the label is not normalised yet: "durian_3" -> "durian".
_RAW_TRAILING_NUMBER = re.compile(r"[\s_.-]+\d+$")
# Word separators as users write them in folder names: "apple_braeburn", "apple-braeburn", "apple.braeburn".
_SEPARATORS = re.compile(r"[\s_.-]+")


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


def normalize_label(label: str) -> str:
    """The form labels are compared in, so that spelling, case, accents and separators do not decide a match:
    NFKD without combining marks, casefolded, `_`, `-`, `.` and whitespace runs as one space, stripped."""
    decomposed = unicodedata.normalize("NFKD", label)
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    return _SEPARATORS.sub(" ", plain.casefold()).strip()


def _strip_variety_number(normalized: str) -> str:
    """A normalised label without its trailing variety number ("apple braeburn 1" -> "apple braeburn"); a label
    that is only a number keeps it, so "2019" is never looked up as an empty name."""
    return _TRAILING_NUMBER.sub("", normalized)


@cache
def _label_index() -> dict[str, dict[str, Any]]:
    """Normalised known label -> its entry in `labels`, built once.

    Also holds each numbered label's stem ("apple golden" for "Apple Golden 1".."3") when every label with that
    stem agrees on fruit and variety, so "apple_golden_4" keeps the variety the dataset's own classes have.
    A stem never shadows a label of the same normalised form.
    """
    labels: dict[str, dict[str, Any]] = _load()["labels"]
    index: dict[str, dict[str, Any]] = {}
    for label in sorted(labels):
        index.setdefault(normalize_label(label), labels[label])
    stems: dict[str, list[dict[str, Any]]] = {}
    for label in sorted(labels):
        normalized = normalize_label(label)
        stem = _strip_variety_number(normalized)
        if stem != normalized and stem not in index:
            stems.setdefault(stem, []).append(labels[label])
    for stem, entries in stems.items():
        if len({(entry["fruit"], entry["variety"]) for entry in entries}) == 1:
            index[stem] = entries[0]
    return index


@cache
def _fruit_names() -> list[tuple[str, str]]:
    """(normalised fruit name, fruit key) for every fruit, longest name first, so "passion fruit" wins over a
    shorter name it starts with."""
    names = [(normalize_label(fruit), fruit) for fruit in _load()["fruits"]]
    return sorted(names, key=lambda pair: (-len(pair[0]), pair[0]))


def _singulars(word: str) -> list[str]:
    """Cheap singular guesses for a one-word plural label ("bananas", "peaches", "cherries")."""
    guesses = []
    if word.endswith("ies") and len(word) > 4:
        guesses.append(word[:-3] + "y")
    if word.endswith("es") and len(word) > 3:
        guesses.append(word[:-2])
    if word.endswith("s") and len(word) > 2:
        guesses.append(word[:-1])
    return guesses


def _by_fruit_prefix(name: str) -> tuple[str, str | None] | None:
    """(fruit, variety) when a known fruit name is a whole-word prefix of the normalised label: the rest names the
    variety, title-cased ("apple pink lady x" -> ("Apple", "Pink Lady X")), or None when nothing is left."""
    for fruit_name, fruit in _fruit_names():
        if name == fruit_name:
            return fruit, None
        if name.startswith(fruit_name + " "):
            return fruit, name[len(fruit_name) + 1 :].title()
    return None


def _resolve(label: str) -> tuple[str, str | None] | None:
    """(fruit, variety) for a label as users write it, or None for a fruit the file does not know.

    Order: the exact label; its normalised form; that form without a trailing variety number (the full form first,
    so "apple_red_2" stays "Apple Red 2" rather than its stem); a one-word plural made singular; the longest known
    fruit name the label starts with.
    """
    entry = _load()["labels"].get(label)
    if entry is not None:
        return entry["fruit"], entry["variety"]
    index = _label_index()
    normalized = normalize_label(label)
    name = _strip_variety_number(normalized)
    for candidate in (normalized, name):
        if candidate in index:
            return index[candidate]["fruit"], index[candidate]["variety"]
    if name and " " not in name:
        fruits = dict(_fruit_names())
        for singular in _singulars(name):
            if singular in index:
                return index[singular]["fruit"], index[singular]["variety"]
            if singular in fruits:
                return fruits[singular], None
    return _by_fruit_prefix(name) if name else None


def _fallback(label: str) -> FruitFacts:
    """The facts for a fruit the file does not know: the label as the fruit name, without its variety number."""
    stripped = label.strip()
    return FruitFacts(
        label=label,
        fruit=_RAW_TRAILING_NUMBER.sub("", stripped) or stripped,
        variety=None,
        family=None,
        season=None,
        description=UNKNOWN_DESCRIPTION,
        calories_kcal_per_100g=None,
        vitamin_c_mg_per_100g=None,
        known=False,
    )


def facts_for(label: str) -> FruitFacts:
    """The facts for a class label; a label the file does not cover gets a fallback (known=False), never an error,
    so a model trained on new classes cannot break the app before the facts file catches up.

    Labels are matched as users write them (see `_resolve`); the returned `label` is always the one given.
    """
    resolved = _resolve(label)
    if resolved is None:
        return _fallback(label)
    fruit_name, variety = resolved
    fruit = _load()["fruits"][fruit_name]
    return FruitFacts(
        label=label,
        fruit=fruit_name,
        variety=variety,
        family=fruit["family"],
        season=fruit["season"],
        description=fruit["description"],
        calories_kcal_per_100g=fruit["calories_kcal_per_100g"],
        vitamin_c_mg_per_100g=fruit["vitamin_c_mg_per_100g"],
        known=True,
    )


def fruit_of(label: str) -> str:
    """The fruit a class label names, as the app tells it: what an answer is scored by when any variety of the right
    fruit counts."""
    return facts_for(label).fruit
