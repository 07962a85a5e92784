"""Shared pytest configuration for trajmoe.

The tests read the REAL data of ``../shared/data`` (relative to the repository root) through the
library's loaders; nothing is copied into the repository. ``TRAJMOE_DATA`` overrides the location.
CI has the data, so a missing data folder is an error, never a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()

# Set before any test module imports trajmoe, so loaders called without ``data_home`` find it.
os.environ.setdefault("TRAJMOE_DATA", str(DEFAULT_DATA))


def _data_home() -> Path:
    path = Path(os.environ["TRAJMOE_DATA"]).expanduser().resolve()
    if not path.is_dir():
        pytest.fail(
            f"trajmoe test data not found: TRAJMOE_DATA={os.environ['TRAJMOE_DATA']!r} "
            f"(resolved to {path}) is not a directory. The tests need the real data folder "
            f"(default: ../shared/data next to the repository, i.e. {DEFAULT_DATA}). "
            "Set TRAJMOE_DATA to the folder holding foursquare_nyc/, yjmob100k/, ... "
            "e.g. `TRAJMOE_DATA=/path/to/shared/data python3 -m pytest -q`.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def data_home() -> Path:
    """Folder holding the real data sets (``$TRAJMOE_DATA``).

    Fails the test (it does not skip) when the folder is missing, with a message saying how to set
    ``TRAJMOE_DATA``.
    """
    return _data_home()


@pytest.fixture(scope="session")
def dataset_dir(data_home):
    """Return a function ``name -> Path`` of one data set's folder, failing loudly if absent."""

    def _get(name: str) -> Path:
        path = data_home / name
        if not path.is_dir():
            pytest.fail(
                f"data set folder {name!r} not found in TRAJMOE_DATA={data_home}. "
                "Point TRAJMOE_DATA at the shared data folder (see its README.md).",
                pytrace=False,
            )
        return path

    return _get


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread while a module's tests run (tiny networks: on a busy machine with few
    cores, OpenMP threads waiting for each other make a fit many times slower). Use it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_sessionstart(session):
    """Say at the start of the run, also under ``-q`` (which hides the report header), when the
    data folder is missing: every test that reads data will then fail."""
    path = Path(os.environ["TRAJMOE_DATA"]).expanduser()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not path.is_dir() and reporter is not None:
        reporter.write_line(f"trajmoe test data not found: TRAJMOE_DATA={path} is not a directory; the tests "
                            "that read data will fail. Set TRAJMOE_DATA to the folder holding "
                            "foursquare_nyc/, yjmob100k/, ...", red=True, bold=True)


def pytest_report_header(config):
    """Show which data folder the run reads, and whether it exists."""
    path = Path(os.environ["TRAJMOE_DATA"]).expanduser()
    state = "found" if path.is_dir() else "MISSING: set TRAJMOE_DATA (tests that need data will fail)"
    return f"trajmoe data (TRAJMOE_DATA): {path} [{state}]"
