"""The kit's allocator setting (dfedge/allocator.py): taken on glibc, and a user's own setting left alone."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from dfedge.allocator import fixed_mmap_threshold

CHILD = "from dfedge.allocator import fixed_mmap_threshold; print(fixed_mmap_threshold())"


def run_child(env: dict) -> str:
    return subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_threshold_is_set_on_glibc(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert fixed_mmap_threshold() is True


def test_users_own_threshold_is_kept(monkeypatch):
    import os

    env = {k: v for k, v in os.environ.items()}
    env["MALLOC_MMAP_THRESHOLD_"] = "1048576"
    assert run_child(env) == "False"
