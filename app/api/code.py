"""What will run: TorchScript code and graphs of a model version."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from app.api.deps import ReaderDep, RegistryDep
from app.api.schemas import ModelCode
from app.serving.code_view import as_text

router = APIRouter(tags=["code"])


@router.get(
    "/models/{name}/code",
    summary=("What will run: TorchScript code or graph; an exported program's graph code, graph "
             "and symbolic ranges; an AOTInductor package's C++"),
    response_model=ModelCode,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    response_class=JSONResponse,
)
async def model_code(
    name: str,
    request: Request,
    _: ReaderDep,
    registry: RegistryDep,
    version: int | None = None,
    view: Literal["code", "graph", "inlined"] = "code",
) -> Response:
    mv = await registry.resolve(name, version)
    doc = {"model": name, "version": mv.version, **mv.model.code(view)}
    accept = request.headers.get("accept", "")
    if "text/plain" in accept and "application/json" not in accept:
        return PlainTextResponse(as_text(doc))
    return JSONResponse(doc)
