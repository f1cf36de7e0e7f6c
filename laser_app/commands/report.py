"""``laser report RUN_DIR``: redraw a run folder's plots and print its summary tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from laser_app.commands._errors import user_errors


@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(
        help=("A run folder written by laser run, laser bon or laser compare, or a laser bon --compare folder "
              "(its --out)."), show_default=False)],
    partial: Annotated[bool, typer.Option(help=(
        "Report a run that did not complete (running, interrupted or failed) from the steps it logged."
    ))] = False,
    plots: Annotated[bool, typer.Option(help="Redraw the PNG plots.")] = True,
) -> None:
    """Redraw a run folder's plots and print its summary tables."""
    from rich.console import Console

    from laser_app.report import report_run

    if (run_dir / "bon_compare.json").is_file():
        from laser_app.bon_compare import report_bon_compare

        report_bon_compare(run_dir, Console(), plots=plots)
        return
    if (run_dir / "compare.json").is_file() or (run_dir / "plan.json").is_file():
        from laser_app.compare import report_compare

        report_compare(run_dir, Console(), plots=plots)
        return

    report_run(run_dir, Console(), partial=partial, plots=plots)
