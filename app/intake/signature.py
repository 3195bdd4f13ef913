"""An upload's declared signature: the ``inputs`` / ``outputs`` form fields, as Triton's config.

Each field is a JSON list of ``{"name", "datatype" (FP32...) or "dtype" (float32...),
"shape"}`` with -1 for a variable dimension. Inputs must be ``forward``'s arguments.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.errors import BadRequestError
from app.serving.runtime import Signature
from app.wire.dtypes import BY_DATATYPE, BY_NAME, DATATYPES

FIELDS = {
    "inputs": 'declared inputs: [{"name": "x", "datatype": "FP32", "shape": [-1, 320]}, ...]',
    "outputs": 'declared outputs: [{"name": "output__0", "datatype": "FP32", "shape": [-1, 2]}]',
}
_MAX_TENSORS = 256


def _tensor(item: Any, field: str) -> dict[str, Any]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        raise BadRequestError(f"form field {field!r}: each entry needs a \"name\", \"datatype\", \"shape\"")
    name = item["name"]
    raw = item.get("datatype", item.get("dtype"))
    known = BY_DATATYPE.get(raw) or BY_NAME.get(raw)  # type: ignore[arg-type]
    if known is None:
        raise BadRequestError(
            f"form field {field!r}: {name!r} has datatype {raw!r}; use one of {list(DATATYPES)}"
        )
    shape = item.get("shape")
    if not isinstance(shape, list) or len(shape) > 16 or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
    ):
        raise BadRequestError(
            f"form field {field!r}: {name!r} needs a shape: a list of up to 16 sizes, -1 for variable"
        )
    return {"name": name, "datatype": known.datatype, "shape": shape}


def _tensors(raw: str, field: str) -> list[dict[str, Any]]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"form field {field!r} is not valid JSON: {exc}") from None
    if not isinstance(doc, list) or not doc or len(doc) > _MAX_TENSORS:
        raise BadRequestError(f"form field {field!r} must be a non-empty JSON list of tensors")
    tensors = [_tensor(item, field) for item in doc]
    names = [t["name"] for t in tensors]
    if len(set(names)) != len(names):
        raise BadRequestError(f"form field {field!r} names a tensor twice")
    return tensors


def parse_declared(fields: dict[str, str]) -> dict[str, Any] | None:
    """The declared signature of an upload form, or None when neither field is given."""
    raw_inputs, raw_outputs = fields.get("inputs", "").strip(), fields.get("outputs", "").strip()
    if not raw_inputs and not raw_outputs:
        return None
    if not raw_inputs:
        raise BadRequestError("form field 'outputs' needs 'inputs' too: declare both, or neither")
    declared: dict[str, Any] = {"inputs": _tensors(raw_inputs, "inputs"), "source": "declared"}
    if raw_outputs:
        declared["outputs"] = _tensors(raw_outputs, "outputs")
    return declared


def check_declared(declared: dict[str, Any], signature: Signature) -> None:
    """Declared inputs must be ``forward``'s arguments, every required one included."""
    names = [t["name"] for t in declared.get("inputs", [])]
    unknown = [n for n in names if n not in signature.names]
    if unknown:
        raise BadRequestError(
            f"form field 'inputs' declares {unknown}, which forward does not take; "
            f"its arguments are {signature.names}"
        )
    missing = [n for n in signature.names[: signature.required] if n not in names]
    if missing:
        raise BadRequestError(f"form field 'inputs' leaves out forward's arguments {missing}")
