"""The offline guarantee: with the hub disabled and the network refused, the workbook works."""

import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import socket
real = socket.socket.connect
def refuse(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not str(address[0]).startswith("127."):
        raise OSError(f"network access attempted: {address!r}")
    return real(self, address)
socket.socket.connect = refuse

import toolkit
toolkit.setup(verbose=False)
splits = toolkit.data.make_splits()
tok = toolkit.models.tokenizer()
model = toolkit.models.sentiment_classifier(smoke=True, progress=False)
acc = toolkit.measure.accuracy(model, tok, splits.test[:32])
print("OFFLINE-OK", round(acc, 3))
"""


@pytest.mark.slow
def test_workbook_runs_with_the_hub_disabled():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9")
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OFFLINE-OK" in done.stdout
