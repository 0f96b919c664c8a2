"""The `gridlearn` command: doctor, study runs and the dashboard."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="gridlearn: implicit layers for power systems.")
run_app = typer.Typer(no_args_is_help=True, help="Run a study; results go to results/<study>/<run-id>/.")
app.add_typer(run_app, name="run")


@app.command()
def doctor() -> None:
    """Print versions and devices, and check Ipopt (HS071) and pandapower (case9)."""
    from gridlearn.doctor import run_doctor

    if not run_doctor(typer.echo):
        raise typer.Exit(code=1)


if __name__ == "__main__":  # pragma: no cover
    app()
