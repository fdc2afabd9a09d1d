"""The fruit facts file the app shows: it covers every Fruits-360 class, is consistent, and unknown labels fall back."""

import dataclasses
import json
import numbers
import sys
from pathlib import Path

import pytest

from spark_code.models import fruit_facts
from spark_code.models.fruit_facts import UNKNOWN_DESCRIPTION, FruitFacts, facts_for, known_labels, normalize_label
from tests.conftest import FRUITS_360

FACTS_PATH = Path(fruit_facts.__file__).parent / "fruit_facts.json"
PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"
FRUIT_FIELDS = {"family", "season", "description", "calories_kcal_per_100g", "vitamin_c_mg_per_100g"}


def raw_facts() -> dict:
    return json.loads(FACTS_PATH.read_text(encoding="utf-8"))


def test_every_class_folder_of_the_shared_sample_has_known_facts() -> None:
    training = FRUITS_360 / "Training"
    assert training.is_dir(), f"the shared Fruits-360 sample must be at {training}"
    classes = sorted(path.name for path in training.iterdir() if path.is_dir())
    assert len(classes) == 95
    assert [label for label in classes if not facts_for(label).known] == []
    assert set(classes) <= set(known_labels())


def test_known_labels_are_sorted_and_all_known() -> None:
    labels = known_labels()
    assert labels == sorted(labels)
    assert len(labels) == len(set(labels))
    assert all(facts_for(label).known for label in labels)


def test_every_label_points_to_an_existing_fruit_and_every_fruit_is_used() -> None:
    data = raw_facts()
    fruits = data["fruits"]
    for label, entry in data["labels"].items():
        assert set(entry) == {"fruit", "variety"}, label
        assert entry["fruit"] in fruits, label
        assert entry["variety"] is None or (isinstance(entry["variety"], str) and entry["variety"].strip()), label
    assert {entry["fruit"] for entry in data["labels"].values()} == set(fruits)


def test_every_fruit_has_all_fields_with_text_where_text_is_expected() -> None:
    for name, facts in raw_facts()["fruits"].items():
        assert set(facts) == FRUIT_FIELDS, name
        assert facts["family"].endswith("aceae"), name
        assert facts["season"].strip(), name
        assert facts["description"].strip().endswith("."), name


def test_json_keys_are_sorted_everywhere() -> None:
    def check(pairs: list[tuple[str, object]]) -> dict:
        keys = [key for key, _ in pairs]
        assert keys == sorted(keys)
        return dict(pairs)

    json.loads(FACTS_PATH.read_text(encoding="utf-8"), object_pairs_hook=check)


@pytest.mark.parametrize(("field", "upper_bound"), [("calories_kcal_per_100g", 900), ("vitamin_c_mg_per_100g", 1000)])
def test_numbers_are_non_negative_and_plausible(field: str, upper_bound: float) -> None:
    values = {label: getattr(facts_for(label), field) for label in known_labels()}
    for label, value in values.items():
        if value is not None:
            assert isinstance(value, numbers.Real) and not isinstance(value, bool), label
            assert 0 <= value < upper_bound, label
    assert sum(value is not None for value in values.values()) > len(values) / 2, "most fruits should have a value"


@pytest.mark.parametrize(
    ("label", "fruit", "variety"),
    [
        ("Apple Red 2", "Apple", None),
        ("Apple Granny Smith", "Apple", "Granny Smith"),
        ("Apple Braeburn", "Apple", "Braeburn"),
        ("Grape White 3", "Grape", "White (green-skinned)"),
        ("Tomato 4", "Tomato", None),
        ("Tomato Cherry Red", "Tomato", "Cherry tomato (red)"),
        ("Pear Williams", "Pear", "Williams (Bartlett)"),
        ("Lemon Meyer", "Lemon", "Meyer"),
        ("Cocos", "Coconut", None),
        ("Kaki", "Persimmon", None),
        ("Carambula", "Carambola", None),
        ("Mangostan", "Mangosteen", None),
        ("Maracuja", "Passion fruit", None),
        ("Passion Fruit", "Passion fruit", None),
        ("Granadilla", "Sweet granadilla", None),
        ("Pitahaya Red", "Dragon fruit", "Red pitahaya"),
        ("Pomelo Sweetie", "Oroblanco", "Sweetie"),
        ("Cactus fruit", "Prickly pear", None),
        ("Walnut", "Walnut", None),
    ],
)
def test_labels_map_to_their_fruit_and_variety(label: str, fruit: str, variety: str | None) -> None:
    facts = facts_for(label)
    assert (facts.label, facts.fruit, facts.variety, facts.known) == (label, fruit, variety, True)


def test_varieties_share_the_facts_of_their_fruit() -> None:
    def shared(facts: FruitFacts) -> dict[str, object]:
        return {key: value for key, value in dataclasses.asdict(facts).items() if key not in {"label", "variety"}}

    assert shared(facts_for("Apple Red 2")) == shared(facts_for("Apple Granny Smith"))
    assert shared(facts_for("Tomato 1")) == shared(facts_for("Tomato Cherry Red"))
    assert shared(facts_for("Apple Braeburn")) != shared(facts_for("Tomato 1"))
    apple = facts_for("Apple Braeburn")
    assert (apple.family, apple.calories_kcal_per_100g) == ("Rosaceae", 52)


def test_unknown_label_gives_the_fallback_without_raising() -> None:
    assert facts_for("Durian 3") == FruitFacts(
        label="Durian 3",
        fruit="Durian",
        variety=None,
        family=None,
        season=None,
        description=UNKNOWN_DESCRIPTION,
        calories_kcal_per_100g=None,
        vitamin_c_mg_per_100g=None,
        known=False,
    )
    assert UNKNOWN_DESCRIPTION == "No facts recorded for this fruit yet."
    assert facts_for("Durian").fruit == "Durian"
    assert facts_for("Snake Fruit 12").fruit == "Snake Fruit"
    assert (facts_for("Dragon Fruit 12").fruit, facts_for("Dragon Fruit 12").known) == ("Dragon fruit", True)
    assert facts_for("durian_3").fruit == "durian", "the variety number goes after any separator"


def test_facts_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts_for("Banana").fruit = "Plantain"  # type: ignore[misc]


def test_the_file_is_read_once() -> None:
    fruit_facts._load.cache_clear()
    for label in ["Kiwi", "Banana", "Durian 3"]:
        facts_for(label)
    known_labels()
    assert fruit_facts._load.cache_info().misses == 1


def test_the_json_ships_in_the_wheel() -> None:
    # The project supports Python 3.10 (requires-python), which has no tomllib: there, tomli, which pytest itself
    # requires before 3.11, reads the same TOML.
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    assert config["project"]["requires-python"] == ">=3.10"
    assert "*.json" in config["tool"]["setuptools"]["package-data"]["spark_code.models"]


# Class names as users write them: snake_case with variety numbers, spaces, accents, digits only.


def unknown(label: str, fruit: str) -> FruitFacts:
    return FruitFacts(label, fruit, None, None, None, UNKNOWN_DESCRIPTION, None, None, known=False)


@pytest.mark.parametrize(
    ("label", "normalized"),
    [
        ("Apple Braeburn", "apple braeburn"),
        ("apple_braeburn_1", "apple braeburn 1"),
        ("  APPLE--Braeburn.._2 ", "apple braeburn 2"),
        ("Pêche\tplate", "peche plate"),
        ("Ｋｉｗｉ", "kiwi"),
        ("Straße", "strasse"),
        ("007", "007"),
        ("  ", ""),
    ],
)
def test_labels_normalize_without_case_accents_or_separators(label: str, normalized: str) -> None:
    assert normalize_label(label) == normalized


def test_known_labels_stay_distinct_once_normalized() -> None:
    """Otherwise one Fruits-360 label would silently shadow another in the lookup."""
    labels = known_labels()
    assert len({normalize_label(label) for label in labels}) == len(labels)


@pytest.mark.parametrize("label", ["apple_braeburn_1", "Apple Braeburn", "APPLE-BRAEBURN", "apple braeburn 2"])
def test_user_written_labels_map_to_the_same_fruit(label: str) -> None:
    facts = facts_for(label)
    assert (facts.label, facts.fruit, facts.variety, facts.known) == (label, "Apple", "Braeburn", True)
    assert dataclasses.replace(facts, label="Apple Braeburn") == facts_for("Apple Braeburn")


@pytest.mark.parametrize(
    ("label", "fruit", "variety"),
    [
        ("Bánana", "Banana", None),
        ("banana_3", "Banana", None),
        ("bananas", "Banana", None),
        ("peaches", "Peach", None),
        ("cherries", "Cherry", None),
        ("lime", "Lime", None),
        ("tomato_cherry_red_2", "Tomato", "Cherry tomato (red)"),
        ("apple_golden_4", "Apple", "Golden (yellow-skinned)"),
        ("grape-white-7", "Grape", "White (green-skinned)"),
        ("Dragon_Fruit", "Dragon fruit", None),
        ("passion.fruit.2", "Passion fruit", None),
        ("apple_pink_lady_x", "Apple", "Pink Lady X"),
        ("apple_fuji_3", "Apple", "Fuji"),
        ("grapefruit_pink", "Grapefruit", "Pink"),
        ("Ｋｉｗｉ", "Kiwi", None),
    ],
)
def test_user_written_labels_find_their_fruit_and_variety(label: str, fruit: str, variety: str | None) -> None:
    facts = facts_for(label)
    assert (facts.label, facts.fruit, facts.variety, facts.known) == (label, fruit, variety, True)


def test_a_numbered_label_that_exists_maps_to_itself_not_its_stem() -> None:
    assert dataclasses.replace(facts_for("apple_red_2"), label="Apple Red 2") == facts_for("Apple Red 2")


@pytest.fixture
def facts_file(monkeypatch: pytest.MonkeyPatch):
    """Swaps in a small facts file, with the lookup caches built from it and dropped afterwards."""

    def use(data: dict) -> None:
        monkeypatch.setattr(fruit_facts, "_load", lambda: data)
        clear()

    def clear() -> None:
        fruit_facts._label_index.cache_clear()
        fruit_facts._fruit_names.cache_clear()

    yield use
    clear()


def test_the_full_label_wins_over_the_label_without_its_number(facts_file) -> None:
    fruit = {"calories_kcal_per_100g": 1, "description": "A fruit.", "family": "Rosaceae", "season": "May",
             "vitamin_c_mg_per_100g": 1}  # fmt: skip
    facts_file(
        {
            "fruits": {"Apple": fruit},
            "labels": {
                "Apple Red": {"fruit": "Apple", "variety": "Red"},
                "Apple Red 2": {"fruit": "Apple", "variety": "Second red"},
                "Apple Green 1": {"fruit": "Apple", "variety": "Green"},
                "Apple Green 2": {"fruit": "Apple", "variety": "Light green"},
            },
        }
    )
    assert facts_for("apple_red_2").variety == "Second red"
    assert facts_for("apple_red_3").variety == "Red"
    assert facts_for("APPLE RED").variety == "Red"
    # The numbered labels disagree on what "Apple Green" is, so only the fruit is recognised.
    assert (facts_for("apple_green_3").fruit, facts_for("apple_green_3").variety) == ("Apple", "Green")
    assert facts_for("apple_green_1").variety == "Green"


@pytest.mark.parametrize(
    ("label", "fruit"),
    [
        ("007", "007"),
        ("2019", "2019"),
        ("durian_musang_king", "durian_musang_king"),
        ("durian_3", "durian"),
        ("Pêche", "Pêche"),
        ("  ", ""),
        ("", ""),
        ("_2019", "_2019"),
        ("s", "s"),
        ("es", "es"),
    ],
)
def test_unknown_user_written_labels_fall_back_without_raising(label: str, fruit: str) -> None:
    assert facts_for(label) == unknown(label, fruit)
