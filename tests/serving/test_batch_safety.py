"""The batch-safety probe on models that are and are not batch-safe."""

from __future__ import annotations

import torch

from app.serving.batch_safety import check_batch_safety, variants
from tests.support import fakes


def forward_of(name):
    module = fakes.build(name)
    return lambda inputs: module(*inputs)


def test_per_sample_models_are_safe():
    for name, template in [("classifier", [torch.rand(1, 320)]),
                           ("tuple_out", [torch.rand(2, 4)]),
                           ("dict_out", [torch.rand(1, 4)]),
                           ("embed", [torch.tensor([[1, 5, 9]])]),
                           ("add_scaled", [torch.rand(1, 2), torch.rand(1, 2)])]:
        result = check_batch_safety(forward_of(name), template)
        assert result.safe, (name, result.reason)


def test_input_confirm_is_unsafe_whatever_the_first_input():
    for template in ([torch.rand(1, 8)], [-torch.rand(1, 8)]):
        result = check_batch_safety(forward_of("input_confirm"), template)
        assert not result.safe and "depend on other samples" in result.reason


def test_batch_reductions_are_unsafe():
    assert not check_batch_safety(forward_of("batch_mean"), [torch.rand(1, 4)]).safe


def test_variants_keep_shape_dtype_and_integer_range():
    ids = torch.tensor([[2, 7, 4]])
    for sample in variants([ids], 6):
        assert sample[0].shape == (1, 3) and sample[0].dtype == torch.int64
        assert int(sample[0].min()) >= 2 and int(sample[0].max()) <= 7
    signs = {float(torch.sign(s[0].sum())) for s in variants([torch.rand(1, 8)], 6)}
    assert signs == {1.0, -1.0}
