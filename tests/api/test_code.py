"""What will run: /models/{name}/code in its views and formats."""

from __future__ import annotations

from tests.support.api import upload


def test_code_json_has_forward_methods_and_submodules(client, archives):
    upload(client, "h", archives["with_helper"])
    doc = client.get("/models/h/code").json()
    assert doc["view"] == "code" and doc["version"] == 1
    assert "def forward" in doc["forward"]
    assert "describe" in doc["methods"] and "linear 4->2" in doc["methods"]["describe"]
    assert "torch.linear" in doc["submodules"]["lin"]


def test_code_shows_the_if_of_a_scripted_model(client, archives):
    upload(client, "ic", archives["input_confirm"])
    assert "if " in client.get("/models/ic/code").json()["forward"]


def test_graph_and_inlined_views(client, archives):
    upload(client, "c", archives["classifier"])
    graph = client.get("/models/c/code?view=graph").json()["forward"]
    assert graph.startswith("graph(") and "prim::CallMethod" in graph
    inlined = client.get("/models/c/code?view=inlined").json()["forward"]
    assert "aten::linear" in inlined
    assert client.get("/models/c/code?view=bogus").status_code == 422


def test_plain_text_when_asked(client, archives):
    upload(client, "c", archives["classifier"])
    upload(client, "c", archives["input_confirm"])
    r = client.get("/models/c/code?version=1", headers={"Accept": "text/plain"})
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text.startswith("# forward (code)") and "torch.sigmoid" in r.text
    assert client.get("/models/c/code?version=3").status_code == 404
