"""The app with hosted models, in process: what the HTTP side shows comes from the host."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.support import fakes
from tests.support.api import AUTH, upload, wait_ready


def test_a_hosted_version_serves_shows_its_code_and_its_host_goes_with_it(settings: Settings,
                                                                          tmp_path: Path):
    hosted = settings.model_copy(update={"model_hosts": "per-version"})
    app = create_app(hosted)
    archive = fakes.save("with_helper", tmp_path)
    with TestClient(app) as client:
        wait_ready(client)
        r = upload(client, "helper", archive,
                   example_inputs=json.dumps([{"shape": [2, 4], "dtype": "float32"}]))
        assert r.status_code == 201, r.text
        x = torch.randn(2, 4)
        r = client.post("/models/helper/predict", json={"inputs": x.tolist()})
        assert r.status_code == 200, r.text
        expected = torch.jit.load(str(archive))(x)
        assert torch.allclose(torch.tensor(r.json()["outputs"]), expected, atol=1e-6)
        code = client.get("/models/helper/code").json()
        assert code["forward"] and code["methods"]  # rendered in the host, sent back as text
        info = client.get("/models/helper").json()
        assert info["versions"][0]["batching"]["enabled"] is not None  # probed in the host
        assert "quarantined_versions" not in info
        (mv,) = app.state.registry.all_versions()
        host = mv.model.host
        assert host.pid is not None
        assert "scriptserve_quarantined_versions 0.0" in client.get("/metrics").text
        assert client.delete("/models/helper", headers=AUTH).status_code == 200
        assert host.pid is None  # its host stopped with it
