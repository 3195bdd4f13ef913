"""``inference.GRPCInferenceService``: the Open Inference Protocol (and Triton's extensions)
over gRPC, answered from the same registry, pipeline, batcher, tokens and metrics as HTTP.

Errors are the HTTP ones mapped to gRPC status codes (``STATUS``), with the error code
(``dtype_mismatch``...) in the trailing metadata key ``scriptserve-error-code``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from app import __version__
from app.config import Settings
from app.errors import (
    BadRequestError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    ReadOnlyError,
    ScriptServeError,
)
from app.errors import redact_paths as redact
from app.grpc.proto import open_inference_pb2 as pb
from app.grpc.tensors import decode_inputs, encode_response, parameter
from app.security import check_token
from app.serving import pipeline
from app.serving.model_version import ModelVersion
from app.serving.registry import Registry
from app.telemetry import group_stats
from app.telemetry.stats import VersionStats, status_index
from app.wire import triton
from app.wire.v2 import bind_inputs, model_metadata

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics"]
ERROR_CODE_KEY = "scriptserve-error-code"
STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.FAILED_PRECONDITION,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""HTTP status of a ScriptServe error -> gRPC status (the usual google.rpc mapping)."""


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode("latin-1")
    return None


def _version(name: str, version: str) -> int | None:
    if not version:
        return None
    if not version.isdigit():
        raise NotFoundError(f"model {name!r} has no version {version!r}")
    return int(version)


class InferenceService:
    """The RPCs, each an ``async def (request, context) -> response``."""

    def __init__(self, state: Any) -> None:
        self.state = state  # the FastAPI app.state: registry, settings, admin token, ready
        self.in_flight = 0

    @property
    def registry(self) -> Registry:
        return self.state.registry

    @property
    def settings(self) -> Settings:
        return self.state.settings

    def _reader(self, context: grpc.aio.ServicerContext) -> None:
        token = self.settings.inference_token
        if token:
            check_token(_metadata(context, "authorization"), token, self.state.admin_token)

    def _admin(self, context: grpc.aio.ServicerContext) -> None:
        check_token(_metadata(context, "authorization"), self.state.admin_token)

    # health and metadata -------------------------------------------------------------------
    async def server_live(self, request: Message, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Message, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=bool(self.state.ready))

    async def server_metadata(self, request: Message, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="scriptserve", version=__version__, extensions=EXTENSIONS)

    async def model_ready(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        self._reader(context)
        try:
            self.registry.get(request.name, _version(request.name, request.version))
        except (NotFoundError, NotReadyError):
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def model_metadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        self._reader(context)
        mv = self.registry.get(request.name, _version(request.name, request.version))
        versions = ([mv.version] if request.version
                    else [v.version for v in self.registry.versions(request.name)])
        doc = model_metadata(mv, versions)
        for entry in doc["inputs"]:
            entry.pop("parameters", None)
        return json_format.ParseDict(doc, pb.ModelMetadataResponse(), ignore_unknown_fields=True)

    async def model_config(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        self._reader(context)
        mv = self.registry.get(request.name, _version(request.name, request.version))
        config = triton.model_config(mv, [v.version for v in self.registry.versions(request.name)])
        return json_format.ParseDict({"config": config}, pb.ModelConfigResponse(),
                                     ignore_unknown_fields=True)

    async def model_statistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        self._reader(context)
        if not request.name:
            mvs = sorted(self.registry.all_versions(), key=lambda mv: (mv.name, mv.version))
        elif request.version:
            mvs = [self.registry.get(request.name, _version(request.name, request.version))]
        else:
            mvs = self.registry.versions(request.name)
        token = _metadata(context, "authorization")
        auth = {"Authorization": token} if token else {}
        answer = await group_stats.triton_statistics(self.settings, mvs, request.name or None, auth)
        return json_format.ParseDict(answer, pb.ModelStatisticsResponse(),
                                     ignore_unknown_fields=True)

    # model repository ----------------------------------------------------------------------
    async def repository_index(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        self._reader(context)
        rows = triton.repository_index(self.registry.index(), request.ready)
        return json_format.ParseDict({"models": rows}, pb.RepositoryIndexResponse())

    async def repository_model_load(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        self._admin(context)
        if self.settings.model_dir is not None:
            raise ReadOnlyError("repository load")
        refused = sorted(k for k in request.parameters if k == "config" or k.startswith("file:"))
        if refused:
            raise BadRequestError(
                f"load parameters {refused} are not supported: upload a new version with POST /models"
            )
        await self.registry.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        self._admin(context)
        if self.settings.model_dir is not None:
            raise ReadOnlyError("repository unload")
        await self.registry.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # inference -----------------------------------------------------------------------------
    async def model_infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        if self.in_flight >= self.settings.max_concurrent_predictions:
            raise OverloadedError(f"the server is handling {self.in_flight} predictions; retry shortly")
        self.in_flight += 1
        start = time.monotonic()
        stats: VersionStats | None = None
        status = 500
        try:
            self._reader(context)
            mv = self.registry.get(request.model_name, _version(request.model_name, request.model_version))
            if isinstance(mv.batcher.observer, VersionStats):
                stats = mv.batcher.observer
                stats.in_flight += 1
            response = await self._infer(mv, request, context)
            status = 200
            return response
        except ScriptServeError as exc:
            status = exc.status_code
            raise
        finally:
            self.in_flight -= 1
            if stats is not None:
                end = time.monotonic()
                stats.in_flight -= 1
                stats.record_request(end - start, status_index(status), end)

    async def _infer(
        self, mv: ModelVersion, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        inputs = bind_inputs(decode_inputs(request), mv.model.signature)
        timeout_s = self.settings.request_timeout_s
        micros = parameter(request.parameters, "timeout")
        if isinstance(micros, int) and micros > 0:
            timeout_s = min(micros / 1e6, 3600.0)
        remaining = context.time_remaining()
        if remaining is not None:
            timeout_s = min(timeout_s, max(remaining, 0.0))
        mv = self.registry.get(mv.name, mv.version)  # resolve again after decoding
        output = await pipeline.submit(mv, inputs, timeout_s)
        return encode_response(mv.name, mv.version, request, output)


Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]]


def _unary(fn: Handler, request_type: type[Message]) -> grpc.RpcMethodHandler:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Message:
        try:
            return await fn(request, context)
        except ScriptServeError as exc:
            code = STATUS.get(exc.status_code, grpc.StatusCode.INTERNAL)
            message, error_code = redact(exc.message), exc.code
        except Exception:
            log.exception("gRPC %s failed", getattr(fn, "__name__", "call"))
            code, message, error_code = grpc.StatusCode.INTERNAL, "internal server error", "internal_error"
        context.set_trailing_metadata(((ERROR_CODE_KEY, error_code),))
        await context.abort(code, message)
        raise AssertionError("unreachable")  # abort raises

    return grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=request_type.FromString,
        response_serializer=lambda m: m.SerializeToString(),
    )


def generic_handler(service: InferenceService) -> grpc.GenericRpcHandler:
    """Every RPC ScriptServe answers, under ``inference.GRPCInferenceService``."""
    methods = {
        "ServerLive": (service.server_live, pb.ServerLiveRequest),
        "ServerReady": (service.server_ready, pb.ServerReadyRequest),
        "ServerMetadata": (service.server_metadata, pb.ServerMetadataRequest),
        "ModelReady": (service.model_ready, pb.ModelReadyRequest),
        "ModelMetadata": (service.model_metadata, pb.ModelMetadataRequest),
        "ModelConfig": (service.model_config, pb.ModelConfigRequest),
        "ModelStatistics": (service.model_statistics, pb.ModelStatisticsRequest),
        "ModelInfer": (service.model_infer, pb.ModelInferRequest),
        "RepositoryIndex": (service.repository_index, pb.RepositoryIndexRequest),
        "RepositoryModelLoad": (service.repository_model_load, pb.RepositoryModelLoadRequest),
        "RepositoryModelUnload": (service.repository_model_unload, pb.RepositoryModelUnloadRequest),
    }
    return grpc.method_handlers_generic_handler(
        SERVICE, {name: _unary(fn, req) for name, (fn, req) in methods.items()}
    )
