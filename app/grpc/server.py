"""The gRPC server's lifecycle: started and stopped by the app's lifespan, on uvicorn's loop."""

from __future__ import annotations

import logging
from typing import Any

import grpc

from app.config import Settings
from app.grpc.service import InferenceService, generic_handler

log = logging.getLogger(__name__)

GRACE_S = 5.0
"""How long in-flight RPCs may finish at shutdown."""


class GrpcServer:
    """A ``grpc.aio`` server for ``inference.GRPCInferenceService`` on ``SCRIPTSERVE_GRPC_PORT``."""

    def __init__(self, settings: Settings, state: Any) -> None:
        self.settings = settings
        self.service = InferenceService(state)
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None

    async def start(self) -> int | None:
        """Listen; returns the bound port, or None when switched off or the port is taken."""
        settings = self.settings
        if not settings.grpc_port:
            return None
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", max(settings.max_output_bytes * 2, 64 * 1024**2)),
            # Workers of one group share the port (the kernel spreads connections); a lone
            # server must not silently share it with a stranger.
            ("grpc.so_reuseport", 1 if settings.worker_dir is not None else 0),
        ])
        server.add_generic_rpc_handlers((generic_handler(self.service),))
        address = f"{settings.host}:{settings.grpc_port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            port, reason = 0, str(exc)
        else:
            reason = "bind failed"
        if not port:
            log.error("gRPC is off: could not listen on %s (%s); set SCRIPTSERVE_GRPC_PORT to a "
                      "free port, or 0 to switch gRPC off", address, reason)
            return None
        await server.start()
        self.server, self.port = server, port
        log.info("gRPC (Open Inference Protocol) listening on %s:%d", settings.host, port)
        return port

    async def stop(self) -> None:
        """Refuse new RPCs and let running ones finish (up to ``GRACE_S``)."""
        if self.server is not None:
            await self.server.stop(GRACE_S)
            self.server = None
