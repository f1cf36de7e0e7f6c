"""The ``laser`` typer app: one module per command group (``run``, ``bon``, ``compare``, ``report``, ``world``)."""

from __future__ import annotations

import typer

from laser_app.commands._errors import user_error_lines, user_errors
from laser_app.commands.bon import bon
from laser_app.commands.compare import register as register_compare
from laser_app.commands.report import report
from laser_app.commands.run import run
from laser_app.commands.world import app as world_app

app = typer.Typer(
    name="laser",
    help="LASeR: train a policy LLM by iterative DPO while a bandit picks the reward model per batch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.command("run", help="Run the LASeR loop (or a baseline) and write a run folder.")(run)
app.command("bon", help="Best-of-n answering: per prompt a selector picks the RM that picks the answer.")(bon)
app.command("report", help="Redraw a run folder's plots and print its summary tables.")(report)
register_compare(app)
app.add_typer(world_app, name="world",
              help="Build or inspect the built-in world (tasks, policy, reward models).")

__all__ = ["app", "user_error_lines", "user_errors"]
