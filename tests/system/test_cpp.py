"""The archive runs from C++ (torch::jit::load) and gives the server's answer."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("cmake") and shutil.which("c++")),
                       reason="needs cmake and a C++ compiler"),
]


def test_cpp_example_matches_the_server():
    """scripts/cpp_check.sh: build, serve, upload, download, run in C++, compare."""
    done = subprocess.run(["bash", "scripts/cpp_check.sh"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    diff = float(re.search(r"max abs diff: (\S+)", done.stdout).group(1))
    assert diff <= 1e-5
    print(done.stdout)


def test_cpp_aoti_loader_matches_the_server():
    """scripts/cpp_check.sh --aoti: the server compiles format=aoti; the .pt2 runs in C++."""
    done = subprocess.run(["bash", "scripts/cpp_check.sh", "--aoti"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    diff = float(re.search(r"max abs diff: (\S+)", done.stdout).group(1))
    assert diff <= 1e-5
    print(done.stdout)
