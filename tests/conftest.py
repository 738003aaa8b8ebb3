"""Test settings: offline, smoke mode, results under build/, and no network from tests."""

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# pytest's --basetemp (pyproject.toml) lives in build/, which a fresh clone does not have yet
(ROOT / "build").mkdir(exist_ok=True)

# Set before any kernel starts (nbval and papermill kernels inherit the environment).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WORKBOOK_SMOKE"] = "1"
os.environ.setdefault("WORKBOOK_CACHE", str(ROOT / "build" / "cache"))
os.environ["WORKBOOK_RESULTS_DIR"] = str(ROOT / "build" / "test-results")
os.environ.pop("WORKBOOK_MODEL_DIR", None)
os.environ.pop("WORKBOOK_LANGUAGE", None)  # the tests read the English messages unless they switch

_real_connect = socket.socket.connect


def _loopback_only(self, address):
    """Refuse any connection that leaves the machine: the workbook must work offline."""
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        if not (host.startswith("127.") or host in ("::1", "localhost")):
            raise OSError(f"network access attempted in a test: {address!r}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


@pytest.fixture(scope="session")
def tokenizer():
    import toolkit

    return toolkit.models.tokenizer()


@pytest.fixture(scope="session")
def splits():
    import toolkit

    return toolkit.data.make_splits()
