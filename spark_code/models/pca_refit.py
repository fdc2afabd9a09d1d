"""When the PCA is fitted again, and when new photos are projected with the PCA already published.

Refitting the PCA changes every class's reduced features, so every class must be projected again and the classifier
retrained: the cost of a refit follows the total, not the new data. A PCA fitted on most of the photos describes new
photos of the same classes as well (their embeddings come from the same distribution), so the rule refits only when:
- there is no PCA yet, or the embedding settings, the split roles or the PCA's own settings changed;
- a class appeared or disappeared (its photos may span directions the PCA has never seen);
- the training photos changed by at least `refit_share` of those the PCA was fitted on (count added or removed
  photos per class); `refit_share` 0 refits on every change.
Otherwise new photos are projected with the current PCA. The share is measured in BENCHMARKS.md ("PCA refit rule").
"""

from __future__ import annotations

from typing import Any

TRAINING_ROWS = "training_rows_per_class"
"""PCA notes key: the training photos per class the PCA was fitted on."""
FIT_SETTINGS = "fit_settings"
"""PCA notes key: the settings that choose k (target variance, fixed k, most k)."""
DEFAULT_REFIT_SHARE = 0.1


def refit_reason(
    previous: dict[str, Any] | None,
    training_rows: dict[str, int],
    context: dict[str, Any],
    refit_share: float,
) -> str | None:
    """Why the PCA must be fitted again (for a person to read), or None when the published one still serves.

    `previous`: the published PCA's notes (None when there is none); `training_rows`: training photos per class now;
    `context`: what the fit depends on besides the photos (notes keys "embedding", "photos", "roles",
    FIT_SETTINGS).
    """
    if previous is None:
        return "no PCA published yet"
    changes = (
        ("embedding", "embedding settings"),
        ("photos", "split settings"),
        ("roles", "split roles"),
        (FIT_SETTINGS, "PCA settings"),
    )
    for key, what in changes:
        if previous.get(key) != context.get(key):
            return f"the {what} changed"
    fitted: dict[str, int] | None = previous.get(TRAINING_ROWS)
    if fitted is None:
        return "the published PCA does not record the photos it was fitted on"
    added = sorted(set(training_rows) - set(fitted))
    if added:
        return f"new class(es): {', '.join(added[:10])}" + (f" and {len(added) - 10} more" if len(added) > 10 else "")
    removed = sorted(set(fitted) - set(training_rows))
    if removed:
        return f"class(es) no longer present: {', '.join(removed[:10])}"
    changed = sum(abs(training_rows[name] - fitted[name]) for name in training_rows)
    share = changed / max(1, sum(fitted.values()))
    if changed and share >= refit_share or refit_share <= 0:
        return f"{changed} training photos changed, {share:.2%} of the fit's (refit at {refit_share:.2%})"
    return None


def kept_reason(previous: dict[str, Any], training_rows: dict[str, int], refit_share: float) -> str:
    """Why the published PCA was kept, for a person to read."""
    fitted = previous.get(TRAINING_ROWS, {})
    changed = sum(abs(training_rows[name] - fitted.get(name, 0)) for name in training_rows)
    share = changed / max(1, sum(fitted.values()))
    return (
        f"kept PCA version {previous.get('model_version')}: {changed} training photos changed, {share:.2%} of the "
        f"fit's, below the refit share {refit_share:.2%}, and no class appeared or disappeared"
    )
