"""Progress bars for long work (rich), and bars that show nothing when progress is off: :class:`StepBar`
over a run's training steps, :class:`RunsBar` over ``laser compare``'s runs.

>>> with step_bar(stderr_console(), 3, enabled=False) as bar:
...     bar.advance(rm="rm-a", loss=0.69)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def stderr_console() -> Console:
    """A rich console on stderr (progress and notes; tables go to stdout)."""
    from rich.console import Console

    return Console(stderr=True)


class _Bar:
    """One task of a rich ``Progress``; with ``progress=None`` every update does nothing."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task

    def _update(self, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, **fields)


class StepBar(_Bar):
    """A progress bar over steps that shows the RM and the loss of the last step."""

    def describe(self, text: str) -> None:
        """Show ``text`` before the bar."""
        self._update(description=text)

    def advance(self, *, rm: str, loss: float | None) -> None:
        """One step done, by ``rm``, with ``loss`` (None: skipped)."""
        self._update(advance=1, rm=rm, loss="skipped" if loss is None else f"{loss:.3f}")


class RunsBar(_Bar):
    """A progress bar over runs: done and total, the runs in progress (``running``), failures (``failed``).

    >>> bar = RunsBar(None, None)
    >>> bar.start("laser seed 0"); bar.start("random seed 0"); bar.finish("laser seed 0", ok=False)
    >>> bar.running, bar.failed
    (['random seed 0'], 1)
    """

    def __init__(self, progress: Any, task: Any) -> None:
        super().__init__(progress, task)
        self.running: list[str] = []
        self.failed = 0

    def _show(self) -> None:
        self._update(running=", ".join(self.running) or "-", failed=self.failed)

    def start(self, name: str) -> None:
        """Run ``name`` has started."""
        self.running.append(name)
        self._show()

    def finish(self, name: str, *, ok: bool) -> None:
        """Run ``name`` has ended, successfully when ``ok``."""
        if name in self.running:
            self.running.remove(name)
        self.failed += not ok
        self._update(advance=1)
        self._show()


@contextmanager
def _rich_task(console: Console, head: str, fields: str, *, tail: str | None = None, description: str,
               total: int, **task: Any) -> Iterator[tuple[Any, Any]]:
    """A rich ``Progress`` on ``console`` with one task: ``head``, the bar, done/total, ``fields``, elapsed
    time, eta and ``tail`` (column templates); yields ``(progress, task_id)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn(head), BarColumn(), MofNCompleteColumn(), TextColumn(fields), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), *([TextColumn(tail)] if tail else []))
    with Progress(*columns, console=console, transient=False) as progress:
        yield progress, progress.add_task(description, total=total, **task)


@contextmanager
def step_bar(console: Console, total: int, *, enabled: bool) -> Iterator[StepBar]:
    """A bar over ``total`` steps on ``console``; with ``enabled=False`` a bar that shows nothing."""
    if not enabled:
        yield StepBar(None, None)
        return
    with _rich_task(console, "{task.description}", "rm={task.fields[rm]} loss={task.fields[loss]}",
                    description="starting", total=total, rm="-", loss="-") as (progress, task):
        yield StepBar(progress, task)


@contextmanager
def runs_bar(console: Console, *, total: int, done: int, enabled: bool) -> Iterator[RunsBar]:
    """A bar over ``total`` runs, ``done`` of them already complete, on ``console``; with ``enabled=False`` a
    bar that shows nothing.

    >>> import io
    >>> from rich.console import Console
    >>> console = Console(file=io.StringIO(), width=120)
    >>> with runs_bar(console, total=2, done=1, enabled=True) as bar:
    ...     bar.start("random seed 1")
    ...     bar.finish("random seed 1", ok=False)
    >>> shown = console.file.getvalue()
    >>> "2/2" in shown and "failed 1" in shown
    True
    """
    if not enabled:
        yield RunsBar(None, None)
        return
    with _rich_task(console, "runs", "failed {task.fields[failed]}", tail="running: {task.fields[running]}",
                    description="runs", total=total, completed=done, running="-", failed=0) as (progress, task):
        yield RunsBar(progress, task)
