"""Decoding JSON inputs to tensors and encoding outputs."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import torch

from app.errors import BadRequestError, InputError
from app.wire.native import decode_inputs, dump_json, to_tensor, to_wire


def test_floats_default_to_float32_and_ints_to_int64():
    assert to_tensor([[1.5, 2.0]], "x").dtype == torch.float32
    assert to_tensor([[1, 2]], "x").dtype == torch.int64
    assert to_tensor([[True, False]], "x").dtype == torch.bool


def test_explicit_dtype_and_shape():
    t = to_tensor({"data": [1, 2, 3, 4], "shape": [2, 2], "dtype": "bfloat16"}, "x")
    assert t.dtype == torch.bfloat16 and t.shape == (2, 2)
    t = to_tensor({"data": [[1, 2], [3, 4]], "dtype": "uint8"}, "x")
    assert t.dtype == torch.uint8


@pytest.mark.parametrize("bad", [[[1], [1, 2]], [["a"]], None, "abc", {"values": [1]},
                                 {"data": [1, 2], "shape": "2"}, {"data": [1], "shape": [-5]}])
def test_bad_tensors_are_input_errors(bad):
    with pytest.raises(InputError):
        to_tensor(bad, "x")


def test_decode_one_input_and_named_inputs():
    (x,) = decode_inputs({"inputs": [[1.0]]}, ["x"], 1)
    assert x.shape == (1, 1)
    (x,) = decode_inputs({"inputs": {"x": [[1.0]]}}, ["x"], 1)
    assert x.shape == (1, 1)
    x, y = decode_inputs({"inputs": {"y": [2], "x": [1]}}, ["x", "y", "z"], 2)
    assert x.tolist() == [1] and y.tolist() == [2]


def test_decode_requires_the_inputs_key():
    with pytest.raises(BadRequestError):
        decode_inputs({"data": []}, ["x"], 1)
    with pytest.raises(BadRequestError):
        decode_inputs([1, 2], ["x"], 1)


def test_wire_encoding_keeps_structure_and_handles_half_precision():
    out = {"a": torch.tensor([[1.0, 2.0]], dtype=torch.float16),
           "b": (torch.tensor([1, 2]), torch.tensor([True])),
           "c": torch.arange(6).reshape(2, 3).t()}
    doc = orjson.loads(dump_json(to_wire(out)))
    assert doc == {"a": [[1.0, 2.0]], "b": [[1, 2], [True]], "c": [[0, 3], [1, 4], [2, 5]]}
    assert isinstance(to_wire(torch.zeros(2)), np.ndarray)
