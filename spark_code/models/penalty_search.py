"""When the classifier's penalty is searched again, and when the penalty of the last search is refitted alone.

The search (6 penalties, each fitted on half of the training photos and scored on the other half when there is no
validation split) is 40% of a first training (24 of 60 s on the shared sample), and what it chooses depends on the
training photos as a whole: a few new photos, or one new class among many, leave the best penalty where it was. So
a trained classifier records the search it comes from (the training photos per class it ran on, its settings, the
penalty it chose), and the next training refits that penalty alone unless:
- there is no earlier search, or the classifier's settings or the split roles changed;
- the training photos changed by at least `search_share` of those the search ran on (photos added or removed per
  class; a new class counts all its photos, a class that left all of those it had);
- the kept penalty's refit is refused (did not converge, or stayed at chance): then the search runs.
Kept searches accumulate changes: the share is measured against the last search, not the last fit. Measured in
BENCHMARKS.md ("Classifier penalty kept between searches").
"""

from __future__ import annotations

from typing import Any

SEARCH = "search"
"""Classifier notes key: {"training_rows": {class: photos}, "context": ..., "reg_param": the penalty chosen}."""
DEFAULT_SEARCH_SHARE = 0.1


def photos_changed(before: dict[str, int], now: dict[str, int]) -> int:
    """Photos added or removed per class between two counts (a class absent from one side counts 0 there)."""
    return sum(abs(now.get(name, 0) - before.get(name, 0)) for name in set(before) | set(now))


def search_reason(
    previous: dict[str, Any] | None, training_rows: dict[str, int], context: dict[str, Any], search_share: float
) -> str | None:
    """Why the penalty must be searched again (for a person to read), or None when the last search's penalty may
    be refitted alone. `previous`: the published classifier's notes; `context`: what the search depends on besides
    the photos (classifier settings, split roles), as JSON-like values."""
    search = (previous or {}).get(SEARCH)
    if not search:
        return "no earlier search recorded"
    if search.get("context") != context:
        return "the classifier's settings or the split roles changed"
    searched_on = search.get("training_rows", {})
    changed = photos_changed(searched_on, training_rows)
    share = changed / max(1, sum(searched_on.values()))
    if search_share <= 0 or share >= search_share:
        return f"{changed} training photos changed since the last search, {share:.2%} (searched at {search_share:.2%})"
    return None
