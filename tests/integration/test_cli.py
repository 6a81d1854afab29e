"""``python -m yilian_local up``: starts, prints where things are, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from yilian_local.params import REPO_ROOT

pytestmark = pytest.mark.integration


class _Output:
    """Collects a pipe in a thread (reading it inline could block past any deadline)."""

    def __init__(self, pipe) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._collect, args=(pipe,), daemon=True)
        self._thread.start()

    def _collect(self, pipe) -> None:
        for line in pipe:
            self.text += line

    def wait_for(self, marker: str, process: subprocess.Popen, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while marker not in self.text:
            assert process.poll() is None, f"exited early: {self.text}"
            assert time.monotonic() < deadline, f"no {marker!r} after {timeout}s: {self.text}"
            time.sleep(0.1)
        return self.text

    def finish(self) -> str:
        self._thread.join(timeout=10)
        return self.text


@pytest.mark.timeout(120)
def test_up_serves_the_api_and_stops_cleanly_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "yilian_local", "up", "--port", "0", "--no-seed"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    stdout, stderr = _Output(process.stdout), _Output(process.stderr)
    try:
        printed = stdout.wait_for("Ctrl-C to stop.", process, timeout=90)
        api = re.search(r"API:\s+(http://\S+)", printed).group(1)
        assert re.search(r"Emulator:\s+http://127\.0\.0\.1:\d+", printed)
        response = requests.get(api + "/institutions", timeout=10)
        assert response.status_code == 401  # the real authorizer: no token
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr.finish()
    assert "yilian: stopped." in stdout.finish()
    assert "Traceback" not in stderr.finish()
