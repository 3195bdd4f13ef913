"""The isolated task runner: results, failures, scrubbed environment."""

from __future__ import annotations

import pytest

from app.sandbox.process import IsolationError, Limits, run_isolated, scrubbed_env


def test_echo_round_trip():
    assert run_isolated("echo", {"a": [1, 2]}, Limits())["echo"] == {"a": [1, 2]}


def test_unknown_task_is_reported():
    with pytest.raises(IsolationError) as info:
        run_isolated("no-such-task", {}, Limits())
    assert info.value.reason == "unknown_task"


def test_environment_is_scrubbed(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRIPTSERVE_ADMIN_TOKEN", "secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    env = scrubbed_env(tmp_path, 1)
    assert "secret" not in env.values()
    assert not any(k.startswith("SCRIPTSERVE_") for k in env)
    assert env["HOME"] == str(tmp_path) and env["CUDA_VISIBLE_DEVICES"] == ""
