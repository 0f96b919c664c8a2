"""Start the dashboard server: what ``gridlearn dashboard [--results DIR] [--port N]`` calls.

`launch` starts ``streamlit run dashboards/app.py`` in a child process bound to localhost
and returns it; `wait_until_healthy` polls Streamlit's health endpoint; `serve` does
both and blocks until the server exits (SIGINT or SIGTERM to it stop the server too).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from gridlearn.errors import GridlearnError

logger = logging.getLogger(__name__)

APP = Path(__file__).resolve().parent / "app.py"


def streamlit_command(results_dir: str | Path, port: int = 8501, host: str = "127.0.0.1", headless: bool = True) -> list[str]:
    """The ``streamlit run`` command line (without starting anything)."""
    if not 0 < int(port) < 65536:
        raise ValueError(f"port must be in 1..65535, got {port}")
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", host,
        "--server.port", str(int(port)),
        "--server.headless", "true" if headless else "false",
        # A results viewer needs no code reloading, and polling the repository costs CPU.
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",  # no "Deploy" button on a local results viewer
        "--",
        "--results", str(Path(results_dir).expanduser().resolve()),
    ]  # fmt: skip


def launch(
    results_dir: str | Path,
    port: int = 8501,
    host: str = "127.0.0.1",
    headless: bool = True,
    log: IO[bytes] | IO[str] | None = None,
) -> subprocess.Popen:
    """Start the dashboard over ``results_dir`` on http://host:port and return the process.

    ``headless=False`` lets Streamlit open a browser tab. ``log`` receives the server's
    stdout and stderr (inherited when None). The process leads its own session, so
    `stop` ends Streamlit and anything it started.
    """
    cmd = streamlit_command(results_dir, port=port, host=host, headless=headless)
    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    logger.info("starting dashboard: %s", " ".join(cmd))
    return subprocess.Popen(
        cmd,
        cwd=APP.parents[1],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        start_new_session=True,
    )


def health_url(host: str, port: int) -> str:
    return f"http://{host}:{int(port)}/_stcore/health"


def wait_until_healthy(host: str, port: int, timeout_s: float = 60.0, process: subprocess.Popen | None = None) -> None:
    """Poll Streamlit's health endpoint until it answers "ok"; raise GridlearnError after ``timeout_s``
    or as soon as ``process`` has exited."""
    url = health_url(host, port)
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise GridlearnError(f"dashboard server exited with code {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                body = resp.read().decode(errors="replace").strip()
                if resp.status == 200 and body == "ok":
                    return
                last_error = f"HTTP {resp.status}: {body[:80]!r}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last_error = str(exc)
        time.sleep(0.25)
    raise GridlearnError(f"dashboard at {url} not healthy after {timeout_s:.0f} s (last: {last_error})")


def stop(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Terminate the server's process group (SIGTERM, then SIGKILL after ``timeout_s``)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, 15)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait(timeout=timeout_s)
    except ProcessLookupError:
        process.wait(timeout=timeout_s)


def serve(results_dir: str | Path, port: int = 8501, host: str = "127.0.0.1", headless: bool = True) -> int:
    """Run the dashboard in the foreground until it exits or this process is told to stop.

    The server leads its own session (see `launch`), so a signal sent to this process alone
    (a process manager's or container's SIGTERM, a test harness) would not reach it. SIGTERM
    and SIGINT are therefore forwarded to the server's process group, which is then waited
    for (and killed if it lingers). Returns the server's exit code; 0 after Ctrl-C and
    128 + 15 after SIGTERM, as a shell reports a terminated command.
    """
    process = launch(results_dir, port=port, host=host, headless=headless)
    received: list[int] = []

    def forward(signum, frame):  # noqa: ARG001 - the signal module's handler signature
        received.append(signum)
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop(process)
    if received:
        return 0 if received[0] == signal.SIGINT else 128 + received[0]
    return code
