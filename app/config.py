"""Settings: the one place that reads the environment (prefix ``SCRIPTSERVE_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the server, documented field by field."""

    model_config = SettingsConfigDict(env_prefix="SCRIPTSERVE_", extra="ignore")

    host: str = "127.0.0.1"
    """Address to listen on; 0.0.0.0 in containers."""
    port: int = Field(8000, ge=1, le=65535)
    """TCP port to listen on."""
    model_store: Path = Path("./model_store")
    """Directory holding ``<name>/<version>/`` model versions; survives restarts."""
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
    as soon as the inference worker is free."""
    max_queue_size: int = Field(1024, ge=1)
    """Most requests waiting per model version before new ones get 503."""
    request_timeout_s: float = Field(30.0, gt=0)
    """Default per-request deadline for predictions (504 when exceeded)."""
    max_upload_bytes: int = Field(2 * 1024**3, ge=1024)
    """Largest model upload accepted (413 past it)."""
    max_body_bytes: int = Field(64 * 1024**2, ge=1024)
    """Largest request body for non-upload calls, e.g. predictions (413 past it)."""
    torch_threads: int = Field(0, ge=0)
    """Intra-op threads for torch; 0 keeps torch's default."""
    install_example: bool = True
    """Install the tutorial's classifier as ``classifier`` when the store is empty."""
    gc_freeze: bool = True
    """Freeze long-lived objects out of the cyclic GC after start-up (cuts tail latency)."""
    metrics_enabled: bool = True
    """Record latency metrics and serve ``GET /metrics`` and ``GET /models/{name}/stats``
    (both 404 when off). Request IDs and the access log stay on either way."""

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"critical", "error", "warning", "info", "debug", "trace"}:
            raise ValueError(f"unknown log level {value!r}")
        return value

    @property
    def admin_token_file(self) -> Path:
        """Where a generated admin token is kept."""
        return self.model_store / ".admin_token"
