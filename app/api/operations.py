"""Tracked uploads: ``GET /operations[/{id}]`` (with a long poll) and ``DELETE`` to cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from app.api.deps import AdminDep
from app.api.schemas import OperationInfo, OperationList
from app.intake.operations import Operations

router = APIRouter(tags=["operations"])


async def get_operations(request: Request) -> Operations:
    return request.app.state.operations


OperationsDep = Annotated[Operations, Depends(get_operations)]


@router.get("/operations", summary="Recent upload operations (kept for a day), newest first")
async def list_operations(_: AdminDep, ops: OperationsDep) -> OperationList:
    return OperationList.model_validate({"operations": ops.recent()})


@router.get(
    "/operations/{op_id}",
    summary="An upload operation: stage, timings, result or error",
    responses={404: {"description": "no such operation"}},
)
async def get_operation(
    op_id: str, _: AdminDep, ops: OperationsDep,
    after: Annotated[int, Query(ge=-1, description="wait until the revision passes this")] = -1,
    wait_s: Annotated[float, Query(ge=0, le=30, description="longest wait, seconds")] = 0,
) -> OperationInfo:
    return OperationInfo.model_validate(await ops.wait(op_id, after, wait_s))


@router.delete(
    "/operations/{op_id}",
    summary="Cancel an upload: its compile or trial process is killed, nothing is stored",
    responses={404: {"description": "no such operation"},
               409: {"description": "already finished, or past the commit"}},
)
async def cancel_operation(op_id: str, _: AdminDep, ops: OperationsDep) -> OperationInfo:
    return OperationInfo.model_validate(await ops.cancel(op_id))
