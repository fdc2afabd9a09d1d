"""`fruits bench emr-estimate`: what the main job would take on EMR, on paper, from figures measured here.

Inputs, all measured on this machine and written in BENCHMARKS.md with their commands:
- `cost_ms`: featurization cost per photo per core and `overhead_s`, the fixed cost of a run (application start,
  executors, model loads), from `fruits bench scale`'s fit (time = overhead + photos x cost / cores);
- `main_job_factor`: the whole main job's wall time over its featurization's, from `fruits bench mainjob`'s stage
  times (the index, the PCA, the classifier and the writes on top of the embeddings);
- `touched_ms`: the cost per core of each photo that an incremental run touches without reading it (its listing
  row, the index and store joins, rewriting its class's outputs, the PCA projection and the classifier's refit),
  from `fruits bench incremental` at two sizes (20 classes and the full sample, where 1% new photos touch every
  class): the slope of (b)'s time over the photos touched. Only new or changed photos are read (twice: the index
  and the embedding).
Assumptions, each a parameter: the vCPUs of a node, the speed of one of them against one core here (`core_speed`: 1
means as fast; the bare model runs up to 5x faster on machines with AVX-512), and S3's rate of small GETs per vCPU
(each photo is read twice in a first run: the index and the embedding). The master node is counted in node-hours
but does no task work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EmrAssumptions:
    """What the estimate takes as given; the defaults are those BENCHMARKS.md states."""

    vcpus_per_node: int = 4
    """m5.xlarge: 4 vCPUs (2 physical cores with hyper-threading), 16 GiB."""
    core_speed: float = 1.0
    """Photos per second of one vCPU there over one core here, for the same work."""
    s3_gets_per_s_per_vcpu: float = 50.0
    """Small-object GETs one task thread completes per second (about 20 ms of first-byte latency each)."""
    reads_per_photo_first_run: int = 2
    """The index reads a photo's header, the embedding its bytes: two GETs per photo."""
    new_share: float = 0.01


@dataclass(frozen=True)
class Measured:
    cost_ms: float
    overhead_s: float
    main_job_factor: float
    touched_ms: float


def run_seconds(measured: Measured, assumptions: EmrAssumptions, photos: float, nodes: int) -> tuple[float, float]:
    """(first run, incremental run with `new_share` new photos) wall seconds on `nodes` core nodes."""
    vcpus = nodes * assumptions.vcpus_per_node
    per_photo_s = measured.cost_ms / 1000 * measured.main_job_factor / assumptions.core_speed
    gets_s = 1 / assumptions.s3_gets_per_s_per_vcpu
    first = measured.overhead_s + photos * (per_photo_s + assumptions.reads_per_photo_first_run * gets_s) / vcpus
    new = photos * assumptions.new_share
    touched_s = measured.touched_ms / 1000 / assumptions.core_speed
    read_s = assumptions.reads_per_photo_first_run * gets_s
    incremental = measured.overhead_s + (new * (per_photo_s + read_s) + photos * touched_s) / vcpus
    return first, incremental


def estimate(
    measured: Measured,
    assumptions: EmrAssumptions,
    photo_counts: tuple[float, ...] = (1e6, 1e8),
    node_counts: tuple[int, ...] = (2, 10, 50),
) -> dict[str, Any]:
    """Wall time and node-hours (core nodes + the master) of each size and cluster, first and incremental run."""
    rows = []
    for photos in photo_counts:
        for nodes in node_counts:
            first, incremental = run_seconds(measured, assumptions, photos, nodes)
            rows.append(
                {
                    "photos": int(photos),
                    "core_nodes": nodes,
                    "first_run_h": round(first / 3600, 2),
                    "first_run_node_hours": round(first / 3600 * (nodes + 1), 1),
                    "incremental_h": round(incremental / 3600, 2),
                    "incremental_node_hours": round(incremental / 3600 * (nodes + 1), 1),
                }
            )
    return {"measured": measured.__dict__, "assumptions": assumptions.__dict__, "rows": rows}


PEER = {"photos": 67_692, "minutes": 83.0, "nodes": 3, "instance": "m5.2xlarge", "vcpus_per_node": 8}
"""The one public figure of a peer: 67,692 photos in 83 min on 3 m5.2xlarge nodes."""


def peer_comparison(measured: Measured, assumptions: EmrAssumptions) -> dict[str, Any]:
    """The peer's cluster and photos through this model (all 3 nodes counted as workers, in its favour)."""
    on_peer = EmrAssumptions(**{**assumptions.__dict__, "vcpus_per_node": PEER["vcpus_per_node"]})
    first, _ = run_seconds(measured, on_peer, PEER["photos"], PEER["nodes"])
    return {
        **PEER,
        "peer_photos_per_s": round(PEER["photos"] / (PEER["minutes"] * 60), 1),
        "estimated_minutes": round(first / 60, 1),
        "estimated_photos_per_s": round(PEER["photos"] / first, 1),
    }
