"""Typed bodies of the native API's answers, so that /openapi.json describes every one."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable reason, e.g. not_found, invalid_input")
    message: str = Field(description="what went wrong and what to do about it")


class ErrorBody(BaseModel):
    """Every native error answer."""

    error: ErrorDetail


class HealthStatus(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool = Field(description="every stored model has been loaded (or failed to)")
    models: int = Field(description="models serving now")
    failed: dict[str, str] = Field(description="name/version -> why it could not be loaded")


class ArgumentInfo(BaseModel):
    name: str
    type: str = Field(description="TorchScript type, e.g. Tensor or Optional[Tensor]")
    optional: bool


class SignatureInfo(BaseModel):
    inputs: list[ArgumentInfo]
    returns: str = Field(description="TorchScript return type, e.g. Tensor or Tuple[Tensor, Tensor]")


class BatchingInfo(BaseModel):
    max_batch_size: int
    max_batch_delay_ms: float
    max_queue_size: int
    threads: int = Field(description="inference threads of this version")
    mode: Literal["auto", "on", "off"]
    enabled: bool | None = Field(description="null until the batch-safety check has run")
    reason: str
    program: str | None = Field(None, description="what an exported program's batch dimension allows")


class VersionInfo(BaseModel):
    version: int
    device: str
    format: str = Field("torchscript", description="torchscript, exported_program or aoti")
    signature: SignatureInfo
    archive_bytes: int | None
    parameter_bytes: int
    sha256: str | None
    created_at: str | None = Field(description="ISO 8601, UTC")
    source: str = Field(description="archive, compiled or example")
    batching: BatchingInfo
    queue_depth: int
    in_flight: int
    compile: dict[str, Any] | None = Field(
        None, description="the compile report of an eager upload (docs/compile.md)")
    warnings: list[str] | None = None


class UploadResult(VersionInfo):
    """The version an upload created (201)."""

    name: str


class OperationStage(BaseModel):
    name: str = Field(description="receiving, compiling, screening, trial load, loading, checking, "
                      "warming up, committing, probing, serving")
    started_at: float = Field(description="Unix time")
    seconds: float | None = Field(description="how long it took; null while it runs")
    running_seconds: float | None = Field(None, description="the running stage's time so far")


class OperationError(BaseModel):
    status: int = Field(description="the HTTP status a synchronous upload would have answered")
    code: str
    message: str


class OperationInfo(BaseModel):
    """A tracked upload (``Prefer: respond-async``)."""

    id: str
    kind: Literal["upload"]
    model: str
    owner: str = Field(description="the server process that runs it: host:pid")
    state: Literal["running", "succeeded", "failed", "cancelled"]
    stage: str
    stages: list[OperationStage]
    created_at: float
    updated_at: float
    revision: int = Field(description="grows with every change; pass it as ?after= to wait")
    result: UploadResult | None = Field(description="the 201 body of a synchronous upload")
    error: OperationError | None


class OperationList(BaseModel):
    operations: list[OperationInfo]


class ModelSummary(BaseModel):
    name: str
    default_version: int
    pinned_version: int | None = Field(
        None, description="the version pinned as default (PUT /models/{name}/default); "
        "null: the highest version is the default")
    versions: list[int]
    device: str
    signature: SignatureInfo


class ModelList(BaseModel):
    models: list[ModelSummary]


class ModelDetail(BaseModel):
    name: str
    default_version: int
    pinned_version: int | None = None
    versions: list[VersionInfo]
    quarantined_versions: list[int] = Field(
        default_factory=list,
        description="stored versions not loaded: their loads failed, hung or killed their host "
                    "twice (POST /models/{name}/versions/{version}/retry after a fix)")


class DefaultVersion(BaseModel):
    """The default version after a pin, unpin or rollback."""

    name: str
    default_version: int
    pinned_version: int | None
    previous_default: int


class PinRequest(BaseModel):
    version: int = Field(ge=1, le=2**31 - 1, description="the version to serve by default")


class Deleted(BaseModel):
    name: str
    deleted_versions: list[int]


class ModelCode(BaseModel):
    model: str
    version: int
    view: Literal["code", "graph", "inlined"]
    format: str = "torchscript"
    forward: str | None
    methods: dict[str, str]
    submodules: dict[str, str]
    range_constraints: dict[str, str] | None = Field(
        None, description="an exported program's symbolic dimensions and their ranges")
    notes: list[str] | None = None


class Percentiles(BaseModel):
    """Seconds; null when nothing was seen."""

    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None


class StatsPeriod(BaseModel):
    span_s: float
    requests: int
    errors: int
    by_status: dict[str, int] = Field(description="ok, client_error, server_error, rejected")
    throughput_rps: float
    request_s: Percentiles
    queue_s: Percentiles
    inference_s: Percentiles
    executions: int = Field(description="forward passes")
    mean_batch_size: float | None


class VersionStatsInfo(BaseModel):
    version: int
    queue_depth: int
    batching_enabled: bool | None
    uptime_s: float
    in_flight: int
    window: StatsPeriod = Field(description="the last window_s seconds")
    total: StatsPeriod = Field(description="since this version started serving")


class ModelStats(BaseModel):
    name: str
    window_s: float
    versions: list[VersionStatsInfo]
    workers: int = Field(1, description="worker processes whose numbers these include (--workers)")
    workers_missing: int = Field(0, description="workers that did not answer in time: left out")


class PredictResponse(BaseModel):
    """A native prediction (JSON); ``Accept: application/x-npy`` or ``x-npz`` returns arrays."""

    model: str
    version: int
    outputs: Any = Field(description="the model's output structure: nested lists for tensors, "
                         "lists for tuples, objects for dicts")


# Open Inference Protocol (v2) -------------------------------------------------------------
class ServerMetadataV2(BaseModel):
    name: str
    version: str
    extensions: list[str]


class LivenessV2(BaseModel):
    live: bool


class ReadinessV2(BaseModel):
    ready: bool


class ModelReadyV2(BaseModel):
    name: str
    version: str | None = None
    ready: bool


class TensorMetadataV2(BaseModel):
    name: str
    datatype: str = Field(description="FP32, INT64, ...; UNKNOWN until known")
    shape: list[int] = Field(description="-1 for a dimension that varies")
    parameters: dict[str, Any] | None = None


class ModelMetadataV2(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadataV2]
    outputs: list[TensorMetadataV2]


class OutputTensorV2(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = Field(None, description="flat, row-major; absent when binary")
    parameters: dict[str, Any] | None = None


class InferResponseV2(BaseModel):
    """The JSON part of an inference answer (binary tensors follow it when asked for)."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensorV2]
