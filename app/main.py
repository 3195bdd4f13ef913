"""Composition root: ``create_app(settings)`` wires store, registry, routers and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from app import __version__
from app.api import code, docs, health, models, openapi, operations, predict, v2, v2_extensions
from app.api import errors as api_errors
from app.api import telemetry as telemetry_api
from app.api.middleware.admission import AdmissionMiddleware
from app.api.middleware.body_limit import BodyLimitMiddleware
from app.api.middleware.fastpath import PredictFastPath
from app.api.middleware.read_only import ReadOnlyMiddleware
from app.api.middleware.request_context import RequestContextMiddleware
from app.compiler.service import Compiler
from app.config import Settings
from app.errors import ConflictError
from app.examples import scripted_classifier
from app.grpc.server import GrpcServer
from app.hosting.child import HostLimits
from app.hosting.host import RestartObserver
from app.hosting.hosted import HostPool
from app.intake import model_dir
from app.intake.gate import ArchiveGate
from app.intake.operations import Operations
from app.security import load_or_create_admin_token
from app.serving.batching import BatchPolicy
from app.serving.convergence import StoreSync
from app.serving.loader import Loader
from app.serving.registry import Registry
from app.store import ARCHIVE_FILE, ModelStore, open_store
from app.store.backend import StoreUnavailableError
from app.store.operations import OperationLog
from app.telemetry.prometheus import Metrics
from app.telemetry.store_metrics import StoreCollector

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the FastAPI app; nothing heavy happens until the lifespan starts."""
    settings = settings or Settings()
    if settings.model_dir is not None:  # KServe: a read-only folder, served from a private store
        settings = model_dir.with_scratch_store(settings)
    store = open_store(settings)
    policy = BatchPolicy(
        max_batch_size=settings.max_batch_size,
        max_batch_delay_ms=settings.max_batch_delay_ms,
        max_queue_size=settings.max_queue_size,
        max_output_bytes=settings.max_output_bytes,
    )
    metrics = Metrics() if settings.metrics_enabled else None
    hosts = host_pool(settings, metrics.record_host_restart if metrics else None)
    loader = Loader(
        settings.device, policy,
        observer_factory=metrics.stats_for if metrics else None,
        load_observer=metrics.observe_load if metrics else None,
        gate=ArchiveGate.from_settings(settings),
        hosts=hosts,
    )
    registry = Registry(store, loader)
    ops = Operations(OperationLog(store.backend))
    sync = StoreSync(registry, settings.store_sync_s, settings.store_gc_grace_s)
    if metrics is not None:
        metrics.watch(registry)
        metrics.registry.register(StoreCollector(sync))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        await asyncio.to_thread(store.prepare)
        try:
            await asyncio.to_thread(ops.prepare)
        except StoreUnavailableError as exc:  # an S3 store that is down: start, not ready yet
            log.warning("could not tidy operation records: %s", exc)
        app.state.admin_token = load_or_create_admin_token(
            settings.admin_token, settings.admin_token_file
        )
        if settings.gc_freeze:  # the imports: a full collection through them stalls /health
            gc.collect()
            gc.freeze()
        loaded = asyncio.Event()
        if hosts is not None:
            hosts.on_broken = functools.partial(registry.host_gave_up, asyncio.get_running_loop())
        loader = asyncio.create_task(_load(app, registry, store, settings, sync, loaded))
        if settings.worker_dir is not None and (settings.worker_index > 0 or settings.worker_restarted):
            # A worker takes connections from the shared port only once it serves the store
            # (loading in model hosts takes seconds); worker 0's first start answers at once
            # (health, readiness false) so probes see the server.
            await loaded.wait()
        grpc_server = GrpcServer(settings, app.state)  # same process and event loop as uvicorn
        app.state.grpc_port = await grpc_server.start()
        try:
            yield
        finally:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
            await grpc_server.stop()
            await ops.close()
            if hosts is not None:
                # uvicorn has waited (up to the grace period) for every request: what a host
                # still runs now is stuck or orphaned, so its calls fail and threads end at once
                hosts.close()
            await registry.close()
            if settings.worker_dir is None:  # a group's supervisor removes the shared one
                model_dir.remove_scratch_store(settings)

    app = FastAPI(
        title="ScriptServe",
        version=__version__,
        description="Serve TorchScript models: upload, compile, batch, predict, observe.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.registry = registry
    app.state.operations = ops
    app.state.store_sync = sync
    app.state.metrics = metrics
    app.state.default_policy = policy
    app.state.compiler = Compiler(settings, metrics.record_compilation if metrics else None)
    app.state.ready = False
    app.state.grpc_port = None
    api_errors.install(app)
    docs.install(app)
    openapi.install(app)
    routers = (health.router, models.router, operations.router, predict.router, code.router,
               v2_extensions.router, v2.router, telemetry_api.router)
    for router in routers:
        app.include_router(router)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        exempt=frozenset({("POST", "/models")}),
    )
    app.add_middleware(PredictFastPath, state=app.state)  # predictions skip the layers below
    app.add_middleware(  # sheds excess predictions before anything else runs
        AdmissionMiddleware,
        max_in_flight=settings.max_concurrent_predictions,
        suffixes=("/predict", "/infer"),
    )
    if settings.model_dir is not None:  # uploads, deletions, pins: 405 (docs/kubernetes.md)
        app.add_middleware(ReadOnlyMiddleware)
    if settings.cors_origins:  # preflights are answered here, before auth and the fast path
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID",
                           "Inference-Header-Content-Length", "Prefer"],
            expose_headers=["X-Request-ID", "Location", "Retry-After",
                            "Inference-Header-Content-Length", "X-Model", "X-Model-Version"],
            max_age=600,
        )
    app.add_middleware(RequestContextMiddleware)  # added last: outermost, sees every response
    return app


async def _load(app: FastAPI, registry: Registry, store: ModelStore, settings: Settings,
                sync: StoreSync, loaded: asyncio.Event) -> None:
    """Load the store (and the example model into an empty one), report ready, keep in sync."""
    ready = True
    try:
        registry.loading = True
        try:
            delay = 0.5
            while True:  # the first complete sync: ready only after it
                try:
                    await sync.sync()
                    break
                except StoreUnavailableError as exc:  # the store is down: stay not ready, retry
                    log.warning("model store unreachable, retrying in %.1fs: %s", delay, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
        finally:
            registry.loading = False
        example = settings.install_example and not registry.names()
        if example and not await _install_example(registry, store):
            await sync.sync()  # another server installed it first: serve theirs now
        if settings.model_dir is not None:  # not ready unless every version there serves
            ready = False
            ready = await model_dir.install(registry, store, settings, sync.sync)
    except Exception:
        log.exception("loading the model store failed")
    if settings.gc_freeze:
        # Long-lived torch/FastAPI objects make every full collection slow (tail latency):
        # move them out of the collector's reach and collect young objects less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
    app.state.ready = ready
    loaded.set()
    if ready:
        log.info("ready: %d model(s) loaded", len(registry.names()))
    else:
        log.error("not ready: the model directory %s is not served as a whole (GET /ready: failed)",
                  settings.model_dir)
    await sync.run()


def host_pool(settings: Settings, on_restart: RestartObserver | None) -> HostPool | None:
    """The model host processes of ``settings.model_hosts`` (None: inline, in this process)."""
    if settings.model_hosts == "inline":
        return None
    limits = HostLimits(memory_bytes=settings.host_memory_bytes, threads=settings.torch_threads)
    return HostPool(settings.model_hosts, limits, settings.host_load_timeout_s,
                    settings.host_forward_grace_s, on_restart)


async def _install_example(registry: Registry, store: ModelStore) -> bool:
    """Install the tutorial's classifier as ``classifier`` so a newcomer can predict at once;
    False when another server sharing the store did it first."""
    staging = store.new_staging_dir()
    try:
        module = await asyncio.to_thread(scripted_classifier)
        await asyncio.to_thread(module.save, str(staging / ARCHIVE_FILE))
        await registry.add(
            "classifier", staging, 1, None, registry.loader.default_policy,
            extra_meta={"source": "example", "original_filename": "classifier (tutorial)",
                        # metadata (and the batch-safety decision) known from the start
                        "example_inputs": [{"shape": [1, 320], "dtype": "float32"}]},
        )
        log.info("installed the example model 'classifier' (Linear 320->160->2 + sigmoid)")
        return True
    except ConflictError:  # another server sharing the store installed it first
        store.discard(staging)
        return False
    except BaseException:
        store.discard(staging)
        raise

