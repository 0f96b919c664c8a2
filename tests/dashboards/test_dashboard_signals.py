"""`gridlearn dashboard` ends its Streamlit server when it is itself ended (SIGTERM or SIGINT).

The server runs in its own session, so only an explicit forward reaches it; before the
forward, a SIGTERM left it serving on its port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dashboards.launch import wait_until_healthy

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc (Linux)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(t) for t in text]
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie has ended but not been reaped
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][:1] != "Z"


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex((HOST, port)) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig, expected_code", [(signal.SIGTERM, 128 + 15), (signal.SIGINT, 0)], ids=["SIGTERM", "SIGINT"])
def test_signal_to_the_dashboard_command_ends_its_server(tmp_path, sig, expected_code):
    port = _free_port()
    cli = subprocess.Popen(
        [sys.executable, "-m", "gridlearn.cli", "dashboard", "--results", str(tmp_path), "--port", str(port)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    server = None
    try:
        wait_until_healthy(HOST, port, timeout_s=90, process=cli)
        (server,) = _children(cli.pid)
        assert os.getpgid(server) == server != os.getpgid(cli.pid)  # its own group: the case that needs forwarding
        cli.send_signal(sig)
        assert cli.wait(timeout=30) == expected_code
        deadline = time.monotonic() + 10
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(server), "the Streamlit server outlived the dashboard command"
        assert not _port_open(port)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        if server is not None and _alive(server):
            os.killpg(server, signal.SIGKILL)
