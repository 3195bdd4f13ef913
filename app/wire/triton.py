"""Triton's protocol extensions as documents: model configuration, repository index, statistics.

The same dicts answer over HTTP (``/v2/models/{m}/config``, ``/v2/repository/index``,
``/v2/models/{m}/stats``) and, parsed into protobuf messages, over gRPC: their keys are the
field names of Triton's ``model_config.proto`` / ``grpc_service.proto``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.errors import NotFoundError
from app.telemetry.stats import CLIENT_ERROR, OK, REJECTED, SERVER_ERROR, VersionStats
from app.wire.v2 import PLATFORM, tensor_specs

if TYPE_CHECKING:
    from app.serving.model_version import ModelVersion

BACKEND = "pytorch"
_NS = 1_000_000_000


def _data_type(datatype: str) -> str:
    return "TYPE_INVALID" if datatype == "UNKNOWN" else f"TYPE_{datatype}"


def model_config(mv: ModelVersion, versions: list[int]) -> dict[str, Any]:
    """Triton's model configuration of a served version.

    With batching on, ``max_batch_size`` is the version's and ``dims`` leave out the batch
    dimension, as Triton's do; with batching off (or not decided yet) ``max_batch_size`` is 0
    and ``dims`` are the full shapes. Every stored version is served: version policy ``all``.
    """
    batched = mv.batcher.state.enabled is True
    policy = mv.batcher.policy
    inputs, outputs = tensor_specs(mv)

    def dims(entry: dict[str, Any]) -> list[int]:
        shape = list(entry["shape"])
        return shape[1:] if batched and shape else shape

    config: dict[str, Any] = {
        "name": mv.name,
        "platform": PLATFORM,
        "backend": BACKEND,
        "version_policy": {"specific": {"versions": versions}},
        "max_batch_size": policy.max_batch_size if batched else 0,
        "input": [
            {"name": e["name"], "data_type": _data_type(e["datatype"]), "format": "FORMAT_NONE",
             "dims": dims(e), "optional": bool(e.get("parameters", {}).get("optional"))}
            for e in inputs
        ],
        "output": [
            {"name": e["name"], "data_type": _data_type(e["datatype"]), "dims": dims(e),
             "label_filename": ""}
            for e in outputs
        ],
        "instance_group": [{
            "name": mv.name, "count": policy.threads,
            "kind": "KIND_GPU" if mv.model.on_cuda else "KIND_CPU",
            "gpus": [mv.model.device.index or 0] if mv.model.on_cuda else [],
        }],
        "parameters": {"scriptserve_version": {"string_value": str(mv.version)}},
    }
    if batched:
        config["dynamic_batching"] = {
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": int(policy.max_batch_delay_ms * 1000),
            "preserve_ordering": False,
        }
    return config


def repository_index(rows: list[tuple[str, int, str, str]], ready_only: bool) -> list[dict[str, str]]:
    """Triton's repository index from ``Registry.index()`` rows."""
    out = []
    for name, version, state, reason in rows:
        if ready_only and state != "READY":
            continue
        entry = {"name": name, "version": str(version), "state": state}
        if reason:
            entry["reason"] = reason
        out.append(entry)
    return out


def _duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": int(seconds * _NS)}


def model_statistics(mv: ModelVersion, stats: VersionStats) -> dict[str, Any]:
    """One version's statistics in Triton's shape (counts and cumulative nanoseconds)."""
    ok = stats.requests[OK]
    failed = [stats.requests[i] for i in (CLIENT_ERROR, SERVER_ERROR, REJECTED)]
    zero = _duration(0, 0.0)
    totals = stats.cumulative()
    return {
        "name": mv.name,
        "version": str(mv.version),
        "last_inference": totals["last_inference_ms"],
        "inference_count": totals["samples"],
        "execution_count": totals["executions"],
        "inference_stats": {
            "success": _duration(ok.count, ok.sum),
            "fail": _duration(sum(h.count for h in failed), sum(h.sum for h in failed)),
            "queue": _duration(*totals["queue"]),
            "compute_input": zero,
            "compute_infer": _duration(*totals["inference"]),
            "compute_output": zero,
            "cache_hit": zero,
            "cache_miss": zero,
        },
        "batch_stats": [
            {"batch_size": size, "compute_input": zero,
             "compute_infer": _duration(count, seconds), "compute_output": zero}
            for size, count, seconds in totals["by_batch_size"]
        ],
    }


def statistics(mvs: list[ModelVersion], merged: dict[tuple[str, int], VersionStats] | None = None
               ) -> dict[str, Any]:
    """Triton's statistics extension for these versions (HTTP and gRPC); ``merged``: the
    worker group's numbers per (name, version), in place of this worker's."""
    out = []
    for mv in mvs:
        stats = mv.batcher.observer
        if not isinstance(stats, VersionStats):
            raise NotFoundError("statistics are off on this server (SCRIPTSERVE_METRICS_ENABLED=false)")
        if merged is not None:
            stats = merged.get((mv.name, mv.version), stats)
        out.append(model_statistics(mv, stats))
    return {"model_stats": out}
