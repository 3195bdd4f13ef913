"""Model hosts with real processes and real TorchScript: calls, limits, kills and restarts."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from app.errors import DeadlineExceededError, ModelLoadError, NotReadyError
from app.hosting.child import HostLimits
from app.hosting.hosted import HostPool
from app.serving.runtime import load_model
from tests.support import fakes, spinners

MEMORY = 3 * 1024**3


@pytest.fixture
def pool() -> Iterator[HostPool]:
    restarts: list[str] = []
    hosts = HostPool("per-version", HostLimits(memory_bytes=MEMORY, threads=1), load_timeout_s=60,
                     forward_grace_s=1.0, on_restart=lambda label, reason: restarts.append(reason))
    hosts.restarts = restarts  # type: ignore[attr-defined]
    yield hosts
    hosts.close()


def wait_restarted(model, old_pid: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = model.host.pid
        if pid is not None and pid != old_pid and model.host.ready:
            return pid
        time.sleep(0.05)
    raise AssertionError("the host did not restart")


def test_a_hosted_model_answers_like_the_same_model_in_process(pool, tmp_path):
    archive = fakes.save("tuple_out", tmp_path)
    hosted = pool.load("tuple", str(archive), "cpu")
    local = load_model(archive, "cpu")
    x = torch.randn(3, 4)
    out, expected = hosted.forward([x]), local.forward([x])
    assert isinstance(out, tuple) and all(torch.equal(a, b) for a, b in zip(out, expected))
    assert hosted.signature == local.signature
    assert hosted.parameter_bytes() == local.parameter_bytes()
    assert hosted.graph_findings() == []
    assert hosted.code("code")["forward"] == local.code("code")["forward"]
    assert hosted.batch_safety([x]).safe
    assert hosted.host.pid is not None and hosted.host.pid != os.getpid()


def test_a_forward_past_its_deadline_and_grace_kills_the_host_and_it_restarts(pool, tmp_path):
    model = pool.load("loops", str(spinners.save(spinners.LoopsOnNegative(), tmp_path)), "cpu")
    pid = model.host.pid
    start = time.monotonic()
    with pytest.raises(DeadlineExceededError, match="past the request's deadline"):
        model.run([torch.full((2,), -1e7)], deadline=time.monotonic() + 0.5)
    assert 1.4 < time.monotonic() - start < 10  # deadline 0.5 s + grace 1 s
    new_pid = wait_restarted(model, pid)
    assert not Path(f"/proc/{pid}").exists()
    assert torch.equal(model.run([torch.ones(2)], deadline=time.monotonic() + 30), torch.full((2,), 2.0))
    assert pool.restarts == ["timeout"] and new_pid != pid  # type: ignore[attr-defined]


def test_a_forward_over_the_memory_limit_fails_alone_and_the_host_starts_afresh(pool, tmp_path):
    model = pool.load("alloc", str(spinners.save(spinners.AllocatesOnHuge(), tmp_path)), "cpu")
    pid = model.host.pid
    with pytest.raises(MemoryError):
        model.run([torch.full((2,), 1e7)], deadline=time.monotonic() + 30)
    wait_restarted(model, pid)
    assert torch.equal(model.run([torch.ones(2)], deadline=time.monotonic() + 30), torch.full((2,), 2.0))


def test_a_host_that_dies_fails_its_call_with_503_and_comes_back(pool, tmp_path):
    model = pool.load("loops", str(spinners.save(spinners.LoopsOnNegative(), tmp_path)), "cpu")
    pid = model.host.pid
    assert pid is not None

    def kill_soon() -> None:
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)

    threading.Thread(target=kill_soon).start()
    with pytest.raises(NotReadyError, match="exited"):
        model.run([torch.full((2,), -1e7)], deadline=time.monotonic() + 60)
    wait_restarted(model, pid)
    assert torch.equal(model.forward([torch.zeros(1)]), torch.ones(1))


def test_a_load_that_hangs_is_killed_at_its_limit(tmp_path):
    hosts = HostPool("per-version", HostLimits(memory_bytes=MEMORY), load_timeout_s=8,
                     forward_grace_s=1.0)
    try:
        start = time.monotonic()
        with pytest.raises(ModelLoadError, match="timeout"):
            hosts.load("spin", str(spinners.spin_setstate(tmp_path)), "cpu")
        assert time.monotonic() - start < 30
        assert hosts.hosts() == []  # its host is gone with it
    finally:
        hosts.close()


def test_a_load_over_the_memory_limit_fails_cleanly(tmp_path):
    hosts = HostPool("per-version", HostLimits(memory_bytes=MEMORY), load_timeout_s=60,
                     forward_grace_s=1.0)
    try:
        with pytest.raises(ModelLoadError):
            hosts.load("alloc", str(spinners.alloc_setstate(tmp_path)), "cpu")
        assert hosts.hosts() == []
    finally:
        hosts.close()


def test_per_device_hosts_share_one_process_and_reload_everything_after_a_restart(tmp_path):
    hosts = HostPool("per-device", HostLimits(memory_bytes=MEMORY), load_timeout_s=60,
                     forward_grace_s=0.5)
    try:
        loops = hosts.load("loops", str(spinners.save(spinners.LoopsOnNegative(), tmp_path)), "cpu")
        clf = hosts.load("clf", str(fakes.save("classifier", tmp_path)), "cpu")
        assert loops.host is clf.host and len(hosts.hosts()) == 1
        x = torch.randn(1, 320)
        before = clf.forward([x])
        pid = loops.host.pid
        with pytest.raises(DeadlineExceededError):
            loops.run([torch.full((1,), -1e7)], deadline=time.monotonic() + 0.2)
        wait_restarted(clf, pid)
        assert torch.equal(clf.run([x], deadline=time.monotonic() + 30), before)  # reloaded
        clf.close()
        assert len(hosts.hosts()) == 1  # the host stays for the other version
    finally:
        hosts.close()


def test_a_model_that_cannot_be_reloaded_twice_is_given_up_not_retried_forever(pool, tmp_path):
    archive = spinners.save(spinners.LoopsOnNegative(), tmp_path)
    model = pool.load("gone", str(archive), "cpu")
    given_up: list[str] = []
    pool.on_broken = lambda broken, reason: given_up.append(reason) if broken is model else None
    archive.unlink()  # the next loads of it fail
    for _ in range(2):
        pid = model.host.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_restarted(model, pid)
        with pytest.raises(NotReadyError, match="could not be loaded again"):
            model.forward([torch.zeros(1)])
    assert len(given_up) == 1 and "failed twice" in given_up[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_host_owns_its_device_and_answers_on_the_host(tmp_path):
    hosts = HostPool("per-device", HostLimits(memory_bytes=MEMORY), load_timeout_s=120,
                     forward_grace_s=1.0)
    try:
        archive = fakes.save("classifier", tmp_path)
        model = hosts.load("clf", str(archive), "cuda:0")
        assert str(model.device) == "cuda:0"
        x = torch.randn(4, 320)
        out = model.run([x], deadline=time.monotonic() + 60)
        assert out.device.type == "cpu"
        assert torch.allclose(out, load_model(archive, "cpu").forward([x]), atol=1e-5)
    finally:
        hosts.close()


def test_every_thread_of_a_host_gets_the_intra_op_thread_limit(pool, tmp_path, monkeypatch):
    # torch.set_num_threads in the host's main thread does not bind the pool threads that run
    # forwards: without the environment, their OpenMP teams spun on every core (perf: most of
    # the host's CPU under load, taken from the HTTP workers).
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # the server's own setting does not leak through
    model = pool.load("threads", str(fakes.save("tuple_out", tmp_path)), "cpu")
    environ = Path(f"/proc/{model.host.pid}/environ").read_bytes().split(b"\0")
    assert b"OMP_NUM_THREADS=1" in environ and b"MKL_NUM_THREADS=1" in environ
    assert b"OMP_NUM_THREADS=7" not in environ
