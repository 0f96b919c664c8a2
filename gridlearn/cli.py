"""The `gridlearn` command: doctor, study runs and the dashboard.

Studies live in ``studies/<name>.py`` at the repository root (one file each, with a
module-level ``app``, a typer application); ``gridlearn run NAME ARGS...`` loads that file
and hands it the remaining arguments, so ``python studies/NAME.py ARGS...`` and
``gridlearn run NAME ARGS...`` are the same command.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import List, Optional

import typer

from gridlearn.errors import ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="gridlearn: implicit layers for power systems.")

REPO_ROOT = Path(__file__).resolve().parents[1]
STUDIES_DIR = REPO_ROOT / "studies"
DASHBOARD_APP = REPO_ROOT / "dashboards" / "app.py"


def available_studies() -> list[str]:
    """Study names as typed on the command line (file stem with '-' for '_')."""
    return sorted(p.stem.replace("_", "-") for p in STUDIES_DIR.glob("*.py") if not p.stem.startswith("_"))


def load_study(name: str):
    path = STUDIES_DIR / f"{name.replace('-', '_')}.py"
    if not path.is_file():
        raise ConfigError(f"no study named {name!r}; available: {', '.join(available_studies()) or 'none'}")
    spec = importlib.util.spec_from_file_location(f"gridlearn_study_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the file executes
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    if not hasattr(module, "app"):
        raise ConfigError(f"study file {path} defines no `app` (a typer.Typer) to run")
    return module


@app.command()
def doctor() -> None:
    """Print versions and devices, and check Ipopt (HS071) and pandapower (case9)."""
    from gridlearn.doctor import run_doctor

    if not run_doctor(typer.echo):
        raise typer.Exit(code=1)


@app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def run_study(ctx: typer.Context, name: str = typer.Argument(..., help="study name, e.g. task-forecasting")) -> None:
    """Run a study: gridlearn run NAME [STUDY OPTIONS...] (NAME --help lists them)."""
    try:
        module = load_study(name)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=2)
    module.app(args=list(ctx.args), prog_name=f"gridlearn run {name}")


@app.command("studies")
def list_studies() -> None:
    """List the studies `gridlearn run` knows."""
    for s in available_studies():
        typer.echo(s)


@app.command()
def dashboard(
    results: Path = typer.Option(Path("results"), "--results", help="results directory to show"),
    port: int = typer.Option(8501, "--port", help="localhost port"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind; localhost by default"),
) -> None:
    """Serve the web dashboard over the run directories in --results."""
    import subprocess

    if not DASHBOARD_APP.is_file():
        typer.echo(f"dashboard app not found at {DASHBOARD_APP}", err=True)
        raise typer.Exit(code=2)
    launch = REPO_ROOT / "dashboards" / "launch.py"
    if launch.is_file():
        spec = importlib.util.spec_from_file_location("gridlearn_dashboard_launch", launch)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        if hasattr(module, "serve"):
            # serve() forwards SIGTERM/SIGINT to the server's process group and returns its code.
            code = module.serve(results_dir=results, port=port, host=host)
            if code:
                raise typer.Exit(code=code)
            return
    cmd = [sys.executable, "-m", "streamlit", "run", str(DASHBOARD_APP), "--server.address", host,
           "--server.port", str(port), "--server.headless", "true", "--", "--results", str(results)]
    raise typer.Exit(code=subprocess.call(cmd))


def main(argv: Optional[List[str]] = None) -> None:  # pragma: no cover
    app(args=argv)


if __name__ == "__main__":  # pragma: no cover
    app()
