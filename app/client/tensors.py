"""Client-side tensors: torch / numpy values to request bodies and responses back.

The native API (``/models/{name}/predict``): inputs go out as JSON
``{"data", "shape", "dtype"}``; outputs come back as ``.npz`` arrays with the model's own
dtypes (nested lists when JSON is asked for), shaped by the model's return type. The v2 API
(``/v2/.../infer``) carries raw bytes with exact datatypes.
"""

from __future__ import annotations

import io
from typing import Any, Literal

import numpy as np
import orjson
import torch

from app.wire.dtypes import BY_DATATYPE, BY_TORCH, DATATYPES

OutputKind = Literal["numpy", "torch", "json"]
NPZ = "application/x-npz"
TensorLike = Any  # torch.Tensor | np.ndarray | nested list | number

def is_tensor(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray))


def as_numpy(value: torch.Tensor | np.ndarray) -> tuple[np.ndarray, str | None]:
    """A contiguous host array, and the dtype name the server should rebuild (bfloat16)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            return np.ascontiguousarray(tensor.float().numpy()), "bfloat16"
        return np.ascontiguousarray(tensor.numpy()), None
    return np.ascontiguousarray(value), None


def native_tensor(value: TensorLike) -> Any:
    """One input in the native JSON form (tensors and arrays keep shape and dtype)."""
    if not is_tensor(value):
        return value
    array, dtype = as_numpy(value)
    return {"data": array.reshape(-1), "shape": list(array.shape), "dtype": dtype or str(array.dtype)}


def native_body(inputs: Any) -> bytes:
    """``{"inputs": ...}`` for one tensor, a list of tensors, or a dict keyed by argument."""
    if isinstance(inputs, dict):
        wire: Any = {k: native_tensor(v) for k, v in inputs.items()}
    elif isinstance(inputs, (list, tuple)) and any(is_tensor(v) for v in inputs):
        wire = [native_tensor(v) for v in inputs]
    else:
        wire = native_tensor(inputs)
    return orjson.dumps({"inputs": wire}, option=orjson.OPT_SERIALIZE_NUMPY)


def native_outputs(outputs: Any, returns: str | None, kind: OutputKind) -> Any:
    """Turn a native response's ``outputs`` into arrays (or tensors), by the return type."""
    if kind == "json":
        return outputs
    if returns == "Tensor":
        return _leaf(outputs, kind)
    if returns and returns.startswith(("Tuple[", "List[")) and isinstance(outputs, list):
        items = [_guess(v, kind) for v in outputs]
        return tuple(items) if returns.startswith("Tuple[") else items
    return _guess(outputs, kind)


def npz_outputs(body: bytes, returns: str | None, kind: OutputKind) -> Any:
    """Rebuild a model's output structure from an ``.npz`` answer, dtypes as the model made them.

    The server flattens a tensor to ``output``, tuples and lists to ``0``, ``1``..., dicts to
    their keys, nested with ``.`` (``app/wire/npy.py``).
    """
    with np.load(io.BytesIO(body), allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    if set(arrays) == {"output"}:
        return _leaf(arrays["output"], kind)
    tree: dict[str, Any] = {}
    for key, array in arrays.items():
        node = tree
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = _leaf(array, kind)
    top = _sequences(tree)
    if returns and returns.startswith("Tuple[") and isinstance(top, list):
        return tuple(top)
    return top


def _sequences(node: Any) -> Any:
    """Folders whose keys are 0..n-1 were lists."""
    if not isinstance(node, dict):
        return node
    items = {k: _sequences(v) for k, v in node.items()}
    if items and all(k.isdigit() for k in items) and sorted(map(int, items)) == list(range(len(items))):
        return [items[str(i)] for i in range(len(items))]
    return items


def _guess(value: Any, kind: OutputKind) -> Any:
    if isinstance(value, dict):
        return {k: _guess(v, kind) for k, v in value.items()}
    if isinstance(value, list):
        try:
            array = np.asarray(value)
        except ValueError:  # ragged: a list of outputs
            return [_guess(v, kind) for v in value]
        if array.dtype.kind in "biuf":
            return _leaf(value, kind)
        return [_guess(v, kind) for v in value]
    return _leaf(value, kind) if isinstance(value, (int, float)) else value


def _leaf(value: Any, kind: OutputKind) -> Any:
    array = np.asarray(value)
    if kind == "json":
        return array.tolist()
    return torch.from_numpy(array) if kind == "torch" else array


def v2_body(inputs: dict[str, TensorLike], binary: bool, outputs: list[str] | None) -> tuple[bytes, int]:
    """A v2 inference body; binary puts raw tensor bytes after the JSON header."""
    specs, chunks = [], []
    for name, value in inputs.items():
        datatype, raw = v2_array(value)
        spec: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(raw.shape)}
        if binary:
            chunk = raw.data.cast("B")
            spec["parameters"] = {"binary_data_size": chunk.nbytes}
            chunks.append(chunk)
        else:
            spec["data"] = _json_data(datatype, raw)
        specs.append(spec)
    doc: dict[str, Any] = {"inputs": specs}
    if outputs is None:
        doc["parameters"] = {"binary_data_output": binary}
    else:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": binary}} for n in outputs]
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"".join([head, *chunks]), len(head)


def v2_array(value: TensorLike) -> tuple[str, np.ndarray]:
    """The v2 datatype of a value and its raw, contiguous array (BF16 as 16-bit words)."""
    tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(
        np.ascontiguousarray(np.asarray(value, dtype=np.float32 if _floaty(value) else None))
    )
    datatype = BY_TORCH[tensor.dtype].datatype if tensor.dtype in BY_TORCH else None
    if datatype is None:
        raise TypeError(f"dtype {tensor.dtype} has no v2 datatype; use one of {list(DATATYPES)}")
    tensor = tensor.detach().cpu().contiguous()
    if datatype == "BF16":
        tensor = tensor.view(torch.int16)
    return datatype, np.ascontiguousarray(tensor.numpy())


def _floaty(value: Any) -> bool:
    """Plain Python lists of floats become FP32, as in the native API."""
    return not is_tensor(value) and np.asarray(value).dtype == np.float64


def _json_data(datatype: str, raw: np.ndarray) -> np.ndarray:
    if datatype == "BF16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(-1)
    return raw.reshape(-1)


def v2_outputs(doc: dict[str, Any], body: bytes, offset: int, kind: OutputKind) -> dict[str, Any]:
    """Outputs of a v2 response by name, from JSON data or the binary section."""
    result: dict[str, Any] = {}
    for out in doc.get("outputs", []):
        datatype, shape = out["datatype"], out["shape"]
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:
            array = np.asarray(out["data"], dtype=BY_DATATYPE[datatype].json).reshape(shape)
            tensor = torch.from_numpy(array)
            if datatype == "BF16":
                tensor = tensor.to(torch.bfloat16)
        else:
            wire = BY_DATATYPE[datatype].wire
            array = np.frombuffer(body, dtype=wire, count=size // wire.itemsize,
                                  offset=offset).reshape(shape).copy()
            offset += size
            tensor = torch.from_numpy(array)
            if datatype == "BF16":
                tensor = tensor.view(torch.bfloat16)
        if kind == "torch":
            result[out["name"]] = tensor
        elif kind == "json":
            result[out["name"]] = tensor.float().tolist() if datatype == "BF16" else tensor.tolist()
        else:  # numpy has no bfloat16: widen to float32
            result[out["name"]] = tensor.float().numpy() if datatype == "BF16" else tensor.numpy()
    return result
