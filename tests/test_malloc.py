"""tune_malloc: freed large tensors are reused without page faults; a no-op without glibc."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from trajmoe import tune_malloc

# minor page faults of 10 fresh 64 MB tensors, each filled then freed, in a new process, after 10
# such tensors (glibc settles into reusing the freed memory after a few)
_FAULTS = """
import resource, sys, torch
import trajmoe
tuned = trajmoe.tune_malloc() if sys.argv[1] == "tuned" else None
for _ in range(10):
    torch.ones(16 * 1024 * 1024)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 * 1024 * 1024)
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode):
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    tuned, faults = out.stdout.split()
    return tuned, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_tensors_are_reused_without_page_faults():
    _, plain = _faults("plain")
    tuned, faults = _faults("tuned")
    assert tuned == "True"
    pages = 64 * 1024 * 1024 // 4096
    assert plain >= 9 * pages           # every tensor faults its 16,384 pages in again
    assert faults <= pages // 10        # the memory of the previous one, reused


def test_without_mallopt_nothing_changes(monkeypatch):
    class NoMallopt:
        def __init__(self, name):
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert tune_malloc() is False

    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert tune_malloc() is False
