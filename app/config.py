"""Settings: the one place that reads the environment (prefix ``SCRIPTSERVE_``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class Settings(BaseSettings):
    """Every knob of the server, documented field by field."""

    model_config = SettingsConfigDict(env_prefix="SCRIPTSERVE_", extra="ignore")

    host: str = "127.0.0.1"
    """Address to listen on; 0.0.0.0 in containers."""
    port: int = Field(8000, ge=1, le=65535, validation_alias=AliasChoices("scriptserve_port", "port"))
    """TCP port to listen on; without ``SCRIPTSERVE_PORT``, ``$PORT`` (Knative, KServe) if set."""
    grpc_port: int = Field(8001, ge=0, le=65535)
    """TCP port of the gRPC endpoint (Open Inference Protocol, ``inference.GRPCInferenceService``,
    as Triton's 8001); 0 switches gRPC off. A port that is taken is logged and gRPC stays off."""
    model_store: Path | str = Path("./model_store")
    """The model store: a directory (local, or a volume shared by several servers) holding
    archives and version records, or ``s3://bucket/prefix`` (S3 or an S3-compatible store;
    endpoint, region and credentials from the AWS chain: ``AWS_ENDPOINT_URL``, ``AWS_REGION``,
    ``AWS_ACCESS_KEY_ID`` ...); the source of truth every server converges on."""
    store_cache_dir: Path | None = None
    """S3 store only: local folder for verified blob copies (by sha256) and staging uploads;
    default ``<system temp>/scriptserve-store-cache``."""
    store_timeout_s: float = Field(10.0, gt=0)
    """S3 store only: connect and read timeout of each request (retried, bounded, then 503)."""
    store_sync_s: float = Field(5.0, ge=0)
    """How often each server reconciles with the store (with +-20% jitter); 0: only at start-up
    and when a request names a model or version this server does not know."""
    store_gc_grace_s: float = Field(3600.0, ge=60)
    """How long a deleted version's archive stays in the store (longer than a sync plus the
    longest request), before garbage collection removes it."""
    workers: int | Literal["auto"] = 1
    """Server processes sharing the port (``scriptserve serve --workers``; ``auto``: one per
    core). Each is a full replica that converges through the store, so an upload through any
    of them is served by all; each holds its own copy of every model (memory x N)."""
    worker_dir: Path | None = None
    """Set by the worker supervisor, never by hand: the run folder of a worker group."""
    worker_index: int = Field(0, ge=0)
    """Set by the worker supervisor: this worker's number in its group."""
    worker_fd: int | None = None
    """Set by the worker supervisor: the inherited listening socket."""
    worker_restarted: bool = False
    """Set by the worker supervisor: this worker replaces one that died, so its siblings are
    serving; it takes connections only once it serves the store (as workers above 0 do)."""
    device: str = "auto"
    """Default device for models: ``auto`` (first CUDA device if present, else cpu), ``cpu``,
    ``cuda`` or ``cuda:N``."""
    admin_token: str | None = None
    """Bearer token for management calls; generated into ``<store>/.admin_token`` if unset."""
    inference_token: str | None = None
    """Optional bearer token for predict, code and listing calls (open when unset)."""
    log_level: str = "info"
    """Python logging level name (debug, info, warning, error)."""
    log_format: Literal["text", "json"] = "text"
    """``json`` writes one JSON object per log line."""
    max_batch_size: int = Field(32, ge=1, le=65536)
    """Server-wide default: most samples in one forward pass."""
    max_batch_delay_ms: float = Field(0.0, ge=0, le=10_000)
    """Server-wide default: how long a batch may wait to fill; 0 runs whatever is queued
    as soon as an inference thread is free."""
    max_queue_size: int = Field(1024, ge=1)
    """Most requests waiting per model version before new ones get 503."""
    request_timeout_s: float = Field(30.0, gt=0)
    """Default per-request deadline for predictions (504 when exceeded)."""
    shutdown_grace_s: float = Field(30.0, gt=0)
    """How long SIGTERM waits for in-flight requests before cutting them off (all but its last
    second; then stuck model hosts are killed and the server exits); keep it above the longest
    forward pass (and below the orchestrator's kill timeout)."""
    max_upload_bytes: int = Field(2 * 1024**3, ge=1024)
    """Largest model upload accepted (413 past it)."""
    max_body_bytes: int = Field(64 * 1024**2, ge=1024)
    """Largest request body for non-upload calls, e.g. predictions (413 past it)."""
    torch_threads: int = Field(0, ge=0)
    """Intra-op threads for torch; 0 keeps torch's default."""
    install_example: bool = False
    """Install the tutorial's classifier as ``classifier`` when the store is empty."""
    gc_freeze: bool = True
    """Freeze long-lived objects out of the cyclic GC after start-up (cuts tail latency)."""
    metrics_enabled: bool = True
    """Record latency metrics and serve ``GET /metrics`` and ``GET /models/{name}/stats``
    (both 404 when off). Request IDs and the access log stay on either way."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins a browser app may call the API from (CORS), as a JSON list in the environment,
    e.g. ``'["https://app.example.com"]'``; ``["*"]`` allows any origin (without credentials).
    Empty (the default): no CORS headers, browsers keep cross-origin calls out."""

    # compiling eager models (app/compiler; docs/compile.md) ------------------------------
    architectures: list[str] = Field(default_factory=list)
    """Architectures that ``weights`` uploads may name, as import paths ``package.module:Name``
    of an ``nn.Module`` class or factory (a JSON list in the environment, e.g.
    ``'["mypkg.nets:ResNet"]'``). The tutorial's ``Classification`` and ``InputConfirm`` are
    always available."""
    allow_source_uploads: bool = True
    """Accept ``source`` uploads (a .py file with the model's code). They run uploaded code in
    the compile process; switch off where admins should not run code on this machine."""
    trust_pickled_modules: bool = False
    """Unpickle whole pickled modules (``torch.save(model)``) and non-tensor checkpoints in the
    compile process. Unpickling runs arbitrary code: leave off unless every admin is trusted."""
    compile_memory_bytes: int = Field(4 * 1024**3, ge=512 * 1024**2)
    """Address-space limit of one compile process (RLIMIT_AS), in bytes."""
    compile_cpu_s: int = Field(120, ge=1)
    """CPU-time limit of one compile process (RLIMIT_CPU), in seconds. A ResNet-50 traced with
    every check takes about 40 s of CPU here, scripted about 20 s (docs/compile.md)."""
    compile_timeout_s: float = Field(240.0, gt=0)
    """Wall-clock limit of one compile process; past it the process group is killed."""
    compile_threads: int = Field(1, ge=1, le=64)
    """Intra-op threads of a compile process."""
    max_concurrent_compiles: int = Field(1, ge=1, le=64)
    """Compile processes running at once; further eager uploads wait for a free slot."""

    @field_validator("architectures")
    @classmethod
    def _import_paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not _IMPORT_PATH.match(path):
                raise ValueError(f"architecture {path!r} is not an import path like 'pkg.module:Name'")
        return value

    # hardening (docs/security.md) ---------------------------------------------------------
    max_archive_entries: int = Field(10_000, ge=16)
    """Most entries (files) in an uploaded archive (422 past it)."""
    max_archive_uncompressed_bytes: int = Field(8 * 1024**3, ge=1024)
    """Largest total uncompressed size an archive may declare (413 past it)."""
    max_compression_ratio: float = Field(100.0, ge=2)
    """Largest uncompressed/compressed ratio of an archive or of any entry over 1 MiB (422
    past it: a zip bomb). torch writes tensors uncompressed, so real archives are near 1."""
    trial_load: bool = True
    """Load every new archive first in a separate, resource-limited process, so one that
    crashes, hangs or exhausts memory in libtorch fails alone (422). Turn off only for
    trusted archives (the in-process test client does, to save a process start per upload)."""
    allow_aoti_uploads: bool = True
    """Accept AOTInductor packages (uploaded ``.pt2`` or ``format=aoti``). They hold a native
    shared library that runs as machine code in the trial and serving processes; the screen
    checks its imports, not what it does (docs/security.md). Switch off where admins are not
    trusted to run native code on this machine."""
    trial_memory_bytes: int = Field(8 * 1024**3, ge=256 * 1024**2)
    """Address-space limit of the trial-load process, plus twice the archive's uncompressed
    size."""
    trial_timeout_s: float = Field(120.0, gt=0)
    """Wall-clock (and CPU-time) limit of the trial-load process."""
    model_hosts: Literal["per-version", "per-device", "inline"] = "per-version"
    """Where model code runs (docs/isolation.md): ``per-version``, a supervised host process for
    each version; ``per-device``, one host per device shared by its versions; ``inline``, in
    the server's own process (no isolation: a stuck model stops the server)."""
    host_memory_bytes: int = Field(16 * 1024**3, ge=0)
    """Address-space limit (RLIMIT_AS) of each model host; 0: none. Not applied to hosts of
    CUDA devices (the driver reserves more address space than any useful limit)."""
    host_load_timeout_s: float = Field(120.0, gt=0)
    """Longest a model host may take to load a version (and to warm it up, or probe it); past
    it the host is killed. A version whose load fails twice is quarantined."""
    host_forward_grace_s: float = Field(5.0, gt=0)
    """How long a forward pass may run past its request's deadline (answered 504 at the
    deadline) before its host is killed and restarted."""
    max_concurrent_predictions: int = Field(512, ge=1)
    """Most prediction requests inside the server at once (all models); more are answered
    503 with Retry-After at once, before their body is read."""
    max_output_bytes: int = Field(256 * 1024**2, ge=1024)
    """Largest model output returned for one request, counted as raw tensor bytes before
    JSON encoding (422 ``output_too_large`` past it)."""

    @field_validator("workers")
    @classmethod
    def _positive_workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("workers must be 1 or more, or auto")
        return value

    def worker_count(self) -> int:
        """``workers`` as a number: ``auto`` is the cores this process may run on."""
        if self.workers == "auto":
            return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
                os.cpu_count() or 1)
        return self.workers

    # read-only model directory (KServe's /mnt/models; docs/kubernetes.md) ----------------
    model_dir: Path | None = None
    """Serve the archive(s) in this read-only file or folder and nothing else (KServe's
    ``/mnt/models``): one archive file, a folder holding one archive, or numeric subfolders
    ``1/``, ``2/`` ... each holding one archive (the versions). Uploads, deletions, pins and
    repository load/unload are refused (405). The server keeps its store in a fresh private
    folder under ``$TMPDIR`` (``SCRIPTSERVE_MODEL_STORE`` is not used) and never writes here."""
    model_name: str = Field("model", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """The name the model in ``model_dir`` is served under (KServe: the InferenceService's)."""

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"critical", "error", "warning", "info", "debug", "trace"}:
            raise ValueError(f"unknown log level {value!r}")
        return value

    @field_validator("model_store", mode="before")
    @classmethod
    def _store_url_or_path(cls, value: object) -> object:
        if isinstance(value, str) and not value.startswith("s3://"):
            return Path(value)
        return value

    @property
    def store_is_s3(self) -> bool:
        return isinstance(self.model_store, str)

    @property
    def local_store_dir(self) -> Path:
        """The store's local folder: the store itself, or an S3 store's cache."""
        if isinstance(self.model_store, Path):
            return self.model_store
        from app.store.s3 import default_cache_dir

        return self.store_cache_dir or default_cache_dir()

    @property
    def admin_token_file(self) -> Path:
        """Where a generated admin token is kept (an S3 store: this server's cache folder)."""
        return self.local_store_dir / ".admin_token"
