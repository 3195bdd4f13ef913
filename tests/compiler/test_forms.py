"""Telling weights files apart without unpickling them; parsing the compile options."""

from __future__ import annotations

import argparse

import pytest
import torch

from app.compiler.forms import inspect_weights, resolve_architecture
from app.compiler.spec import SpecError, parse_cli_example, parse_examples, parse_init_kwargs
from tests.support.compile_sources import classification_weights, pickled_module


def test_state_dict_is_recognized(tmp_path):
    path, _ = classification_weights(tmp_path)
    assert inspect_weights(path).format == "state_dict"


def test_legacy_state_dict_is_recognized(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path, _use_new_zipfile_serialization=False)
    assert inspect_weights(path).format == "state_dict"


def test_safetensors_is_recognized(tmp_path):
    path, _ = classification_weights(tmp_path, fmt="safetensors")
    assert inspect_weights(path).format == "safetensors"


def test_checkpoint_dict_of_state_dict_is_weights(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": torch.nn.Linear(2, 2).state_dict(), "epoch": 3}, path)
    assert inspect_weights(path).format == "state_dict"


def test_pickled_module_is_refused_with_the_state_dict_hint(tmp_path):
    info = inspect_weights(pickled_module(tmp_path))
    assert info.format == "pickle" and info.is_module
    assert "app.examples.Classification" in info.unsafe_globals
    message = info.refusal()
    assert "whole pickled module" in message and "arbitrary code" in message
    assert "torch.save(model.state_dict()" in message


def test_pickled_object_that_is_not_a_module(tmp_path):
    path = tmp_path / "with-args.pt"
    torch.save({"weights": torch.zeros(2), "args": argparse.Namespace(lr=0.1)}, path)
    info = inspect_weights(path)
    assert info.format == "pickle" and not info.is_module
    assert info.unsafe_globals == ("argparse.Namespace",)


def test_torchscript_archive_as_weights_points_to_file_field(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(SpecError, match="as form field 'file'"):
        inspect_weights(path)


def test_junk_is_a_spec_error(tmp_path):
    path = tmp_path / "junk.bin"
    path.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(SpecError, match="neither a torch.save"):
        inspect_weights(path)


def test_examples_forms():
    assert parse_examples('[{"shape": [1, 320], "dtype": "float32"}]') == [
        {"shape": [1, 320], "dtype": "float32"}]
    assert parse_examples('{"shape": [2, 4]}') == [{"shape": [2, 4], "dtype": "float32"}]
    assert parse_examples("[[[0.5, -1.0]]]") == [{"data": [[0.5, -1.0]]}]
    assert parse_examples('[{"data": [1, 2], "dtype": "int64"}, {"shape": [3], "dtype": "bool"}]') == [
        {"data": [1, 2], "dtype": "int64"}, {"shape": [3], "dtype": "bool"}]
    assert parse_cli_example("1x320:float32") == {"shape": [1, 320], "dtype": "float32"}
    assert parse_cli_example("8x3") == {"shape": [8, 3], "dtype": "float32"}


@pytest.mark.parametrize("bad", ["[", "[]", '[{"dtype": "float32"}]', '[{"shape": [1], "dtype": "f8"}]',
                                 '[{"shape": [-1]}]', '[{"shape": [100000, 100000]}]', '["a"]',
                                 '[{"shape": [1], "colour": 1}]'])
def test_bad_examples(bad):
    with pytest.raises(SpecError):
        parse_examples(bad)


def test_init_kwargs():
    assert parse_init_kwargs('{"width": 4}') == {"width": 4}
    for bad in ["[1]", '{"a b": 1}', "{"]:
        with pytest.raises(SpecError):
            parse_init_kwargs(bad)


def test_architecture_names():
    assert resolve_architecture("Classification", []) == "app.examples:Classification"
    assert resolve_architecture("ResNet", ["mypkg.nets:ResNet"]) == "mypkg.nets:ResNet"
    assert resolve_architecture("mypkg.nets:ResNet", ["mypkg.nets:ResNet"]) == "mypkg.nets:ResNet"
    with pytest.raises(SpecError, match="available"):
        resolve_architecture("os:system", [])


def test_plain_pickle_of_a_module_is_refused(tmp_path):
    import pickle

    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(torch.nn.Linear(2, 2), protocol=2))
    info = inspect_weights(path)
    assert info.format == "pickle" and info.is_module
    assert "torch.nn.modules.linear.Linear" in info.unsafe_globals


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_every_pickle_protocol_is_read_from_opcodes(tmp_path, protocol):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    weights, whole = tmp_path / "sd.pt", tmp_path / "whole.pt"
    torch.save(model.state_dict(), weights, pickle_protocol=protocol)
    torch.save(model, whole, pickle_protocol=protocol)
    assert inspect_weights(weights).format == "state_dict"
    info = inspect_weights(whole)
    assert info.format == "pickle" and info.is_module
    assert "torch.nn.modules.container.Sequential" in info.unsafe_globals
