"""Data-quality checks, computed by the assets themselves on the classes of the run.

Dagster's standalone asset checks are not partition-aware (a check would load every class), so each Spark-backed
asset declares its checks and evaluates them in the same Spark pass that produces its output. A failed blocking
check stops its step before any output is yielded (`refuse_when_blocked`): Dagster itself fails such a step only
after its outputs were stored, which would publish the rows the check refused.
"""

from collections import Counter
from collections.abc import Iterator

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, Failure, MetadataValue
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_code.models.label_check import NEIGHBOURS, neighbour_votes
from spark_code.photos.splits import FEEDBACK, ROLE, TRAIN, VALIDATE
from spark_code.photos.views import is_view
from spark_code.settings import EMBEDDING_WIDTH
from spark_code.storage.feedback import FeedbackRecord

FLOOD_MIN_PHOTOS = 10
"""Below this many photos in a class no sender floods it: a handful from one person is how a class's feedback
starts."""

EMBEDDINGS_WIDTH_CHECK = AssetCheckSpec(
    "embeddings_are_1280_wide_without_nan",
    asset="image_embeddings",
    blocking=True,
    description=f"Every embedding has exactly {EMBEDDING_WIDTH} values and no NaN.",
)
NOTHING_LOST_CHECK = AssetCheckSpec(
    "every_indexed_file_is_embedded_or_rejected",
    asset="image_embeddings",
    blocking=True,
    description="Embeddings + rejected images = files indexed by raw_images, and no path appears twice.",
)
REJECTED_SHARE_CHECK = AssetCheckSpec(
    "rejected_share_within_limit",
    asset="image_embeddings",
    blocking=True,
    description="At most max_rejected_share of the files are rejected, in the run and in each class.",
)
REDUCED_WIDTH_CHECK = AssetCheckSpec(
    "reduced_width_equals_k",
    asset="reduced_features",
    blocking=True,
    description="Every reduced vector has exactly k values (the PCA model's k) and no NaN.",
)


BLOCKING = frozenset(
    spec.name
    for spec in (EMBEDDINGS_WIDTH_CHECK, NOTHING_LOST_CHECK, REJECTED_SHARE_CHECK, REDUCED_WIDTH_CHECK)
    if spec.blocking
)

BLOCKED = "blocking check failed"
"""How a step stopped by a failed blocking check starts its failure's description."""


def refuse_when_blocked(results: list[AssetCheckResult]) -> Iterator[AssetCheckResult]:
    """Yield the step's check results, then fail it at once (no retries: the same data fails the same way) when a
    blocking one failed, before the step yields an output: nothing it refused is published, so it stays stale and
    the next run computes it again."""
    yield from results
    failed = sorted(result.check_name for result in results if result.check_name in BLOCKING and not result.passed)
    if failed:
        raise Failure(f"{BLOCKED}: {', '.join(failed)}", allow_retries=False)


def _width_problems(df: DataFrame, column: str, width: int) -> dict[str, int]:
    """Rows, rows whose array is not `width` long and rows holding a NaN, in one aggregation. A row without an array
    is the nothing-lost check's (Spark 3.5 gives its size as -1, Spark 4 as null)."""
    row = df.agg(
        F.count("*").alias("rows"),
        F.sum((F.col(column).isNotNull() & (F.size(column) != width)).cast("int")).alias("wrong_width"),
        F.sum(F.exists(column, lambda x: F.isnan(x)).cast("int")).alias("with_nan"),
    ).first()
    return {key: int(row[key] or 0) for key in ("rows", "wrong_width", "with_nan")}


def _width_result(spec: AssetCheckSpec, df: DataFrame, column: str, width: int) -> AssetCheckResult:
    problems = _width_problems(df, column, width)
    return AssetCheckResult(
        check_name=spec.name,
        asset_key=spec.asset_key,
        passed=problems["wrong_width"] == 0 and problems["with_nan"] == 0,
        severity=AssetCheckSeverity.ERROR,
        metadata={"expected_width": width, **problems},
    )


def check_embeddings_width(embeddings: DataFrame) -> AssetCheckResult:
    return _width_result(EMBEDDINGS_WIDTH_CHECK, embeddings, "features", EMBEDDING_WIDTH)


def check_reduced_width(reduced: DataFrame, k: int) -> AssetCheckResult:
    return _width_result(REDUCED_WIDTH_CHECK, reduced, "pca_features", k)


def check_nothing_lost(indexed: DataFrame, embedded: DataFrame) -> AssetCheckResult:
    """`embedded` holds one row per indexed file, with features when it was embedded and an `error` when it was
    rejected; a row with neither (its content found nowhere: the file changed after it was indexed) is lost."""
    counts = embedded.agg(
        F.count("*").alias("rows"),
        F.count("error").alias("rejected"),
        F.count_if(F.col("features").isNotNull() & F.col("error").isNull()).alias("embedded"),
        F.countDistinct("path").alias("distinct_paths"),
    ).first()
    files = indexed.count()
    rejected = int(counts["rejected"])
    embedded_rows = int(counts["embedded"])
    return AssetCheckResult(
        check_name=NOTHING_LOST_CHECK.name,
        asset_key=NOTHING_LOST_CHECK.asset_key,
        passed=embedded_rows + rejected == files == int(counts["distinct_paths"]),
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "files_indexed": files,
            "embedded": embedded_rows,
            "rejected": rejected,
            "lost": int(counts["rows"]) - embedded_rows - rejected,
            "distinct_paths": int(counts["distinct_paths"]),
        },
    )


def check_rejected_share(embedded: DataFrame, limit: float) -> AssetCheckResult:
    """A regression that rejects good photos (a codec, a decoding change) must not pass as "bad files": the share
    rejected in the run and in each class stays within `limit`. Blocking, so no model is fitted on what is left."""
    counts = embedded.groupBy("label").agg(F.count("*").alias("files"), F.count("error").alias("rejected"))
    per_class = {row["label"]: (int(row["files"]), int(row["rejected"])) for row in counts.collect()}
    files = sum(count for count, _ in per_class.values())
    rejected = sum(count for _, count in per_class.values())
    over = {label: round(bad / count, 4) for label, (count, bad) in per_class.items() if bad > limit * count}
    worst = dict(sorted(over.items(), key=lambda item: -item[1])[:20])
    return AssetCheckResult(
        check_name=REJECTED_SHARE_CHECK.name,
        asset_key=REJECTED_SHARE_CHECK.asset_key,
        passed=rejected <= limit * files and not over,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "files": files,
            "rejected": rejected,
            "rejected_share": round(rejected / files, 4) if files else 0.0,
            "max_rejected_share": limit,
            "classes_over_limit": len(over),
            "worst_classes": worst,
        },
    )


FEEDBACK_LABELS_CHECK = AssetCheckSpec(
    "feedback_photos_look_like_their_class",
    asset="fruit_classifier",
    description=f"No feedback photo has none of its {NEIGHBOURS} nearest training photos in the class a user gave it "
    "(a likely wrong label); warns with the photos named.",
)
FEEDBACK_SENDERS_CHECK = AssetCheckSpec(
    "no_sender_floods_a_class",
    asset="fruit_classifier",
    description=f"No sender gave a class at least {FLOOD_MIN_PHOTOS} feedback photos and more than "
    "feedback_sender_share of its feedback photos; warns with the senders named.",
)
NAMED = 50
"""Photos or senders a warning names in full; the counts cover them all."""


def check_feedback_labels(rows: DataFrame, feedback_photos: int) -> AssetCheckResult:
    """`rows`: the classifier's rows (path, label, split, pca_features, role). The feedback photos among the training
    rows are the suspects, every training photo the pool (augmented views left out: a photo's view votes for it)."""
    result = {"check_name": FEEDBACK_LABELS_CHECK.name, "asset_key": FEEDBACK_LABELS_CHECK.asset_key}
    if not feedback_photos:
        return AssetCheckResult(passed=True, metadata={"feedback_photos": 0}, **result)
    pool = rows.where(F.col(ROLE).isin(TRAIN, VALIDATE) & ~is_view())
    votes = neighbour_votes(pool, pool.where(F.col("split") == FEEDBACK), "pca_features")
    flagged = votes.where((F.col("agreeing") == 0) & F.col("neighbours_say").isNotNull()).persist()
    per_class = {row["label"]: int(row["count"]) for row in flagged.groupBy("label").count().collect()}
    named = flagged.orderBy("label", "path").limit(NAMED).collect()
    flagged.unpersist()
    table = "\n".join(f"| {row['label']} | {row['neighbours_say']} | {_photo_id(row['path'])} |" for row in named)
    return AssetCheckResult(
        passed=not per_class,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "feedback_photos": feedback_photos,
            "flagged": sum(per_class.values()),
            "flagged_per_class": per_class,
            "flagged_photos": MetadataValue.md(
                f"| given class | its {NEIGHBOURS} nearest photos say | id (`fruits feedback remove <id>`) |\n"
                f"|---|---|---|\n{table}"
            ),
        },
        **result,
    )


def _photo_id(path: str) -> str:
    """A feedback photo's id: its file name without the extension (spark_code.storage.feedback)."""
    return path.rsplit("/", 1)[-1].split(".", 1)[0]


def flooding_senders(records: list[FeedbackRecord], share: float) -> list[dict]:
    """The (class, sender) pairs where one sender gave at least FLOOD_MIN_PHOTOS photos and more than `share` of the
    class's feedback photos, most photos first."""
    per_class = Counter(record.label for record in records)
    per_sender = Counter((record.label, record.sender) for record in records)
    flooding = [
        {"class": label, "sender": sender, "photos": photos, "share": round(photos / per_class[label], 4)}
        for (label, sender), photos in per_sender.items()
        if photos >= FLOOD_MIN_PHOTOS and photos > share * per_class[label]
    ]
    return sorted(flooding, key=lambda item: (-item["photos"], item["class"], item["sender"]))


def check_feedback_senders(records: list[FeedbackRecord], share: float) -> AssetCheckResult:
    """Warn about senders who flood a class (flooding_senders), naming them and the command that drops them."""
    flooding = flooding_senders(records, share)
    table = "\n".join(f"| {f['class']} | {f['sender']} | {f['photos']} | {f['share']:.0%} |" for f in flooding[:NAMED])
    return AssetCheckResult(
        check_name=FEEDBACK_SENDERS_CHECK.name,
        asset_key=FEEDBACK_SENDERS_CHECK.asset_key,
        passed=not flooding,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "feedback_photos": len(records),
            "senders": len({record.sender for record in records}),
            "feedback_sender_share": share,
            "flooding": len(flooding),
            "flooding_senders": MetadataValue.md(
                "| class | sender (`fruits feedback drop-sender <sender>`) | photos | share |\n|---|---|---|---|\n"
                + table
            ),
        },
    )
