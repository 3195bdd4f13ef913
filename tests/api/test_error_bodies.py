"""Every kind of error answer is JSON without stack traces or paths of this machine."""

from __future__ import annotations

import zipfile

import torch

from app.errors import redact_paths
from tests.support.api import AUTH, upload
from tests.support.leaks import assert_no_leak


def test_error_bodies_do_not_leak_internals(client, archives, settings, tmp_path):
    assert upload(client, "clf", archives["classifier"]).status_code == 201
    assert upload(client, "neg", archives["fails_on_negative"]).status_code == 201
    fake = tmp_path / "fake.pt"
    with zipfile.ZipFile(fake, "w") as zf:  # passes screening, torch cannot load it
        zf.writestr("m/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("m/constants.pkl", b"\x80\x02).")
        zf.writestr("m/code/__torch__.py", b"class Broken(Module):\n  def forward(self\n")
    answers = [
        client.post("/models/clf/predict", content=b"{not json",
                    headers={"content-type": "application/json"}),
        client.post("/models/clf/predict", json={"inputs": "text"}),
        client.post("/models/clf/predict", json={"inputs": [[1.0, 2.0]]}),  # wrong width
        client.post("/models/neg/predict", json={"inputs": [[-1.0]]}),  # the model raises
        client.post("/models/clf/predict", content=b"x", headers={"content-type": "image/png"}),
        client.post("/models/nope/predict", json={"inputs": [[1.0]]}),
        client.post("/models/clf/versions/9/predict", json={"inputs": [[1.0]]}),
        client.post("/models/clf/predict?timeout_s=-1", json={"inputs": [[1.0]]}),
        client.get("/models/clf/code?view=nonsense"),
        client.get("/models/clf/archive?version=x"),
        client.put("/models/clf"),
        client.delete("/models/clf"),  # no token
        client.post("/models", data={"name": "../x"}, files={"file": ("a", b"x")}, headers=AUTH),
        upload(client, "clf", archives["classifier"], version=1),  # exists
        upload(client, "fake", fake),
    ]
    statuses = sorted({r.status_code for r in answers})
    assert statuses == [400, 401, 404, 405, 409, 415, 422], statuses
    for r in answers:
        assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"code", "message"}, r.text
        assert_no_leak(r.text, settings.model_store)
    assert "negative values are not allowed" in answers[3].json()["error"]["message"]


def test_redaction_keeps_media_types_and_removes_paths():
    text = "cannot open /srv/store/.staging/ab12/model.torchscript: multipart/form-data expected"
    assert redact_paths(text) == "cannot open <path>: multipart/form-data expected"


class _NamesAPath(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any()):
            raise ValueError("cannot read /srv/secret/weights/extra.bin")
        return x


def test_model_errors_on_the_fast_path_are_redacted(client, tmp_path):
    path = tmp_path / "names_a_path.torchscript"
    torch.jit.script(_NamesAPath()).save(str(path))
    assert upload(client, "leaky", path).status_code == 201
    for url in ("/models/leaky/predict", "/models/leaky/versions/1/predict"):
        r = client.post(url, json={"inputs": [[-1.0]]})
        assert r.status_code == 422
        message = r.json()["error"]["message"]
        assert "/srv/secret" not in message and "cannot read <path>" in message, message
    v2 = client.post("/v2/models/leaky/infer", json={"inputs": [
        {"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [-1.0]}]})
    assert v2.status_code == 422 and "/srv/secret" not in v2.text and "<path>" in v2.text
