"""The ``scriptserve`` command against a real server: the round trip, tokens, errors, bench."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from app.cli import main
from app.cli.connection import resolve_token
from app.config import Settings
from tests.support.api import TOKEN
from tests.support.server import LiveServer

pytestmark = pytest.mark.slow


class Wide(torch.nn.Module):
    """About 1 MB of weights, so an upload takes several chunks."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(512, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(x))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LiveServer(tmp_path_factory.mktemp("cli-live") / "store", token=TOKEN) as live:
        yield live


@pytest.fixture
def cli(server, capsys):
    """Run ``scriptserve ARGS --url <server>``; returns (exit status, stdout, stderr)."""

    def run(*args: str, token: str | None = TOKEN) -> tuple[int, str, str]:
        extra = ["--url", server.url] + (["--token", token] if token else [])
        status = main([*args, *extra])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_round_trip_upload_predict_code_download_delete(cli, tmp_path):
    torch.manual_seed(0)
    module = torch.jit.script(Wide().eval())
    archive = tmp_path / "wide.torchscript"
    module.save(str(archive))
    size = archive.stat().st_size
    assert size > 1_000_000

    status, out, err = cli("upload", "wide", str(archive), "--progress")
    assert status == 0, err
    assert "uploaded wide version 1" in out
    done, total = re.search(r"upload wide\.torchscript.*?([\d.]+)/([\d.]+) MB", err).groups()
    assert done == total  # the bar reached the end

    status, out, _ = cli("models")
    assert status == 0 and "wide" in out and "(x) -> Tensor" in out
    status, out, _ = cli("info", "wide", "--json")
    info = json.loads(out)
    assert info["versions"][0]["archive_bytes"] == size

    x = np.random.default_rng(0).standard_normal((2, 512)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    status, out, _ = cli("predict", "wide", "-i", str(tmp_path / "x.npy"), "--json")
    assert status == 0
    expected = module(torch.from_numpy(x)).detach().numpy()
    assert np.allclose(np.asarray(json.loads(out)), expected, atol=1e-5)
    status, out, _ = cli("predict", "wide", "-d", json.dumps(x[:1].tolist()))
    assert status == 0 and out.startswith("output  float32 (1, 512)")  # as the model returns it
    status, out, _ = cli("predict", "wide", "-i", f"x={tmp_path / 'x.npy'}", "--v2",
                         "--save", str(tmp_path / "y.npy"))
    assert status == 0 and "output__0  float32 (2, 512)" in out
    assert np.allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)

    status, out, _ = cli("code", "wide")
    assert status == 0 and "def forward" in out and "relu" in out

    target = tmp_path / "downloaded.torchscript"
    status, out, err = cli("download", "wide", "-o", str(target), "--progress")
    assert status == 0 and f"saved {target}" in out and "download wide" in err
    assert hashlib.sha256(target.read_bytes()).hexdigest() == info["versions"][0]["sha256"]
    reloaded = torch.jit.load(str(target))
    assert torch.equal(reloaded(torch.from_numpy(x)), module(torch.from_numpy(x)))

    status, out, _ = cli("delete", "wide")
    assert status == 0 and "deleted wide version(s) 1" in out
    assert cli("models")[1].strip() == "no models"


def test_errors_print_the_server_message_and_exit_1(cli, tmp_path):
    status, _, err = cli("predict", "nope", "-d", "[1.0]")
    assert status == 1 and "no model named 'nope' (404 not_found)" in err
    status, _, err = cli("predict", "nope")
    assert status == 1 and "no inputs" in err
    status, _, err = cli("upload", "m", str(tmp_path / "missing.torchscript"))
    assert status == 1 and "missing.torchscript" in err
    junk = tmp_path / "junk.torchscript"
    junk.write_bytes(b"not a zip")
    status, _, err = cli("upload", "m", str(junk), token="wrong")
    assert status == 1 and "401 unauthorized" in err
    assert "hint: the server refused the token from --token" in err and "SCRIPTSERVE_ADMIN_TOKEN" in err


def test_global_options_go_before_or_after_the_command(server, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("SCRIPTSERVE_ADMIN_TOKEN", raising=False)
    bare = server.url.removeprefix("http://")  # no scheme: http:// is assumed
    assert main(["--url", bare, "--token", TOKEN, "models", "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), list)
    assert main(["--url", "http://127.0.0.1:9", "models", "--url", bare, "--json"]) == 0  # after wins
    assert isinstance(json.loads(capsys.readouterr().out), list)
    assert main(["--url", bare, "--store", str(tmp_path), "delete", "nothing"]) == 1
    err = capsys.readouterr().err
    assert "401 unauthorized" in err and "hint: no token was sent" in err and "--token" in err
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("scriptserve ")


def test_bench_runs_a_bounded_load(cli, archives):
    assert cli("upload", "clf", str(archives["classifier"]))[0] == 0
    status, out, err = cli("bench", "clf", "-n", "3", "-c", "1")
    assert status == 1 and "shape is unknown" in err  # nothing seen yet: no made-up inputs
    status, out, err = cli("bench", "clf", "-d", json.dumps([[0.5] * 320]), "-n", "20", "-c", "2",
                           "--json")
    assert status == 0, err
    summary = json.loads(out)
    assert summary["requests"] == 20 and summary["succeeded"] == 20 and summary["failed"] == 0
    assert set(summary["latency_ms"]) == {"p50", "p90", "p99", "max"}
    # now the server knows the input's shape: bench makes up inputs (v2, batches of 4)
    status, out, err = cli("bench", "clf", "-n", "10", "--batch", "4", "--v2", "--json")
    assert status == 0, err
    summary = json.loads(out)
    assert summary["succeeded"] == 10
    assert summary["samples_per_s"] == pytest.approx(4 * summary["requests_per_s"], rel=0.01)
    status, out, _ = cli("bench", "clf", "-n", "5", "-c", "1")
    assert status == 0 and "clf: 5 requests" in out and "latency ms  p50" in out
    assert cli("delete", "clf")[0] == 0


def test_bench_uses_metadata_from_the_upload_and_measures_the_server(cli, server, archives):
    r = server.upload("ex", archives["classifier"], example_inputs='[{"shape": [1, 320]}]')
    assert r.status_code == 201, r.text
    # no prediction yet: the metadata comes from the upload's example inputs
    status, out, err = cli("bench", "ex", "-n", "40", "-c", "4", "--procs", "2", "--v2", "--json")
    assert status == 0, err
    summary = json.loads(out)
    assert summary["succeeded"] == 40 and summary["client_processes"] == 2
    assert isinstance(summary["client_bound"], bool) and summary["client_cpu_busy"] >= 0
    assert summary["server"]["requests"] >= 40 and summary["server"]["mean_ms_in_server"] > 0
    status, out, err = cli("bench", "ex", "-n", "10", "-c", "2", "--procs", "0", "--json")
    assert status == 0 and json.loads(out)["succeeded"] == 10, err  # the Python client path
    status, out, _ = cli("bench", "ex", "-n", "10", "-c", "1")
    assert status == 0 and "in server" in out
    assert cli("delete", "ex")[0] == 0


def test_token_comes_from_flag_then_env_then_store_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SCRIPTSERVE_ADMIN_TOKEN", raising=False)
    (tmp_path / ".admin_token").write_text("from-file\n")
    args = argparse.Namespace(token=None, store=tmp_path)
    settings = Settings(model_store=tmp_path)
    assert resolve_token(args, settings) == "from-file"
    monkeypatch.setenv("SCRIPTSERVE_ADMIN_TOKEN", "from-env")
    assert resolve_token(args, Settings(model_store=tmp_path)) == "from-env"
    args.token = "from-flag"
    assert resolve_token(args, Settings(model_store=tmp_path)) == "from-flag"
    assert resolve_token(argparse.Namespace(token=None), Settings(model_store=tmp_path / "no")) \
        == "from-env"


def test_console_script_reads_the_store_token(server, archives):
    """A real ``python -m app.cli`` process, token from the server's store file only."""
    (server.store / ".admin_token").write_text(TOKEN + "\n")
    env = {"PATH": "/usr/bin:/bin", "SCRIPTSERVE_MODEL_STORE": str(server.store)}
    run = [sys.executable, "-m", "app.cli"]
    done = subprocess.run([*run, "upload", "sub", str(archives["tuple_out"]), "--url", server.url,
                           "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "sub"
    done = subprocess.run([*run, "delete", "sub", "--url", server.url], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "deleted sub" in done.stdout
    assert "bench" in subprocess.run([*run, "--help"], capture_output=True, text=True,
                                     timeout=60).stdout


def test_pin_unpin_and_rollback_from_the_shell(cli, archives):
    for _ in range(3):
        assert cli("upload", "pinned", str(archives["classifier"]))[0] == 0
    status, out, _ = cli("pin", "pinned", "1")
    assert status == 0 and "default version 3 -> 1 (pinned to version 1)" in out
    status, out, _ = cli("info", "pinned")
    assert "(default version 1 (pinned))" in out
    status, out, _ = cli("unpin", "pinned", "--json")
    assert json.loads(out) == {"name": "pinned", "default_version": 3, "pinned_version": None,
                               "previous_default": 1}
    status, out, _ = cli("rollback", "pinned")
    assert status == 0 and "default version 3 -> 2 (pinned to version 2)" in out
    status, _, err = cli("pin", "pinned", "7")
    assert status == 1 and "no version 7" in err
    assert cli("delete", "pinned")[0] == 0


def test_upload_follows_the_operation_and_reports_its_error(cli, tmp_path):
    junk = tmp_path / "junk.torchscript"
    junk.write_bytes(b"not an archive" * 50)
    status, _, err = cli("upload", "junk", str(junk))
    assert status == 1 and "TorchScript archive" in err


def test_the_client_shows_each_stage(server, archives):
    from app.client import Client

    stages: list[str] = []
    with Client(server.url, TOKEN) as client:
        info = client.upload(archives["classifier"], "staged", on_stage=lambda r: stages.append(r["stage"]))
        assert info["name"] == "staged" and info["version"] == 1
        client.delete("staged")
    assert stages[0] == "receiving" and stages[-1] == "serving"
    assert "trial load" in stages and "committing" in stages
