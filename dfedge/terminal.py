"""What the command line needs besides its commands: the consoles, progress bars, one-line user errors, the build's
summary, and the capture of what converters print (C++ logs, progress bars, warnings) into a log file."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .models.writing import command_inputs, terminate, track

if TYPE_CHECKING:
    from .build import BuildConfig, Row

# ":train:" in "toy:train:40" must not become an emoji; piped output (CI logs) gets room for the wide tables
console = Console(emoji=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, emoji=False)
KIT = str(Path(__file__).parent)  # warnings the kit's own code raises stay on the terminal (own_warning)
SUMMARY_WIDTH = 100  # the build's default summary table fits this many columns (--wide: every column, any width)


@contextlib.contextmanager
def user_errors():
    """Bad input ends the command with one line on stderr and exit code 2, not a traceback (the message as written:
    brackets in it are text, not markup)."""
    try:
        yield
    except FileNotFoundError as e:
        err_console.print(f"[red]error:[/red] {escape(str(e.filename))}: no such file", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except OSError as e:  # a folder where a file goes, no permission, a full disk: the path and the reason
        err_console.print(f"[red]error:[/red] {escape(str(e.filename or ''))}: {escape(str(e.strerror or e))}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except ValueError as e:  # a bad option or setting, and the kit's CheckpointError and ImageError (ValueErrors)
        err_console.print(f"[red]error:[/red] {escape(str(e))}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def clean_up_on_termination(ctx=None) -> None:
    """SIGTERM and Ctrl-C remove the temporary files and folders being written, then end the command
    (models.writing.terminate); the default action would leave them. Called as each command starts (`ctx`, its
    click context): what the command reads as input is tracked until it ends, so no output replaces it."""
    if ctx is not None:
        command_inputs(True)
        ctx.call_on_close(lambda: command_inputs(False))
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, terminate)


def table(title: str, columns, rows, left=()) -> Table:
    """A rich table: columns right-aligned but those named in `left`."""
    out = Table(title=title)
    for col in columns:
        out.add_column(col, justify="left" if col in left else "right")
    for row in rows:
        out.add_row(*row)
    return out


def fitted_table(title: str, columns, rows, width: int, shrink: str, left=(), caption: str | None = None) -> Table:
    """table() no wider than `width` whose cells never wrap: the cells of the column `shrink` are cut short (with
    '…') to what the other columns leave."""
    at = list(columns).index(shrink)
    widths = [max(cell_len(str(c)) for c in [col, *(r[i] for r in rows)]) for i, col in enumerate(columns)]
    room = max(8, width - sum(w for i, w in enumerate(widths) if i != at) - 3 * len(columns) - 1)  # padding, borders
    cut = [[*r[:at], r[at] if cell_len(r[at]) <= room else set_cell_size(r[at], room - 1) + "…", *r[at + 1:]] for r in rows]
    out = table(title, columns, cut, left)
    out.caption = caption
    for col in out.columns:
        col.no_wrap = True
    return out


def print_summary(config: BuildConfig, rows: list[Row], final: Path, wide: bool = False, out: Console | None = None) -> int:
    """The table of a build, export or quantize, then which rungs were required and the exit status it gives
    (build.outcome), and where the report and the converters' log are; returns that exit status. By default the
    table's few columns fit SUMMARY_WIDTH (build.summary); `wide`: every column, as in report.md."""
    from .build import outcome, summary

    out = out or console
    gate = f"ΔAUC ≥ -{config.max_auc_drop * 100:.2f} pp on {config.data}" if config.data else "parity only"
    names, cells = summary(rows, wide)
    more = "× torch = torch FP32 eager p50 / p50" if wide else "--wide: every column"
    title, caption, width = f"dfedge {config.command} '{config.set_name}' → {final}", f"gate: {gate}; {more}", min(out.width, SUMMARY_WIDTH)
    if wide:
        shown = table(title, names, cells, names[:4])
        shown.caption = caption
    else:
        shown = fitted_table(title, names, cells, width, "status", names[:2], caption)
    out.print(shown, width=None if wide else width)
    for line in (line for r in rows for line in r.accuracy_lines()):
        out.print(line, highlight=False, markup=False)
    code, sentence = outcome(rows)
    passed = sum(r.status == "ok" for r in rows)
    out.print(f"{passed}/{len(rows)} bundles passed. {sentence}", highlight=False, markup=False,
              width=min(out.width, SUMMARY_WIDTH))
    out.print(f"report: {final / config.kind.report}; converter output (warnings, converter logs): "
              f"{final / f'{config.command}.log'}", highlight=False, markup=False, soft_wrap=True)
    return code


@contextlib.contextmanager
def progress_bar(label: str, total: int, absolute: bool = False):
    """One bar on stderr, removed when done: yields advance(n=1), or with `absolute` done(count)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task(label, total=total)
        if absolute:
            yield lambda done: progress.update(task, completed=done)
        else:
            yield lambda n=1: progress.advance(task, n)


@contextlib.contextmanager
def step_progress(label: str, total: int, on: Console):
    """(log, advance): log lines print above one progress bar over all steps; the bar shows the latest line."""
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=on, transient=True) as progress:
        task = progress.add_task("", total=total)

        def log(message: str) -> None:
            progress.console.print(message, highlight=False)
            progress.update(task, description=message[:60])

        yield log, lambda n=1: progress.advance(task, n)


def quiet_converters() -> None:
    """NNCF logs every op it skips at INFO; the build's own log and summary say what happened. torchao (imported
    by the TFLite INT8 path) warns at import that its CUDA kernels do not load: meaningless on a CPU build."""
    try:
        import nncf  # it sets its logger's level when imported: set ours after that
    except ImportError:  # an install without the quantizers can still export
        pass
    else:
        nncf.set_log_level(logging.WARNING)
    logging.getLogger("torchao").setLevel(logging.ERROR)


def own_warning(category, filename) -> bool:
    """A warning of the kit's own code (a small calibration set): raised by a call in dfedge, attributed to a line
    of dfedge, of a plain Python category. The others go to the log, among them those attributed to the kit's lines
    that another library raised: torch's TracerWarning on the model code it traces, deprecations, a library's
    warning with stacklevel pointing at its caller in the kit."""
    if not str(filename).startswith(KIT) or issubclass(category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
        return False
    if category.__module__ != "builtins" and not category.__module__.startswith("dfedge"):  # torch.jit.TracerWarning
        return False
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") in ("warnings", "_py_warnings", __name__):
        frame = frame.f_back  # the frames of the warnings machinery and of this capture, up to warnings.warn's caller
    return frame is not None and frame.f_code.co_filename.startswith(KIT)


@contextlib.contextmanager
def converter_output(path: Path):
    """Everything the converters print while a command runs (C++ logs, progress bars, warnings) goes to `path`;
    yields a Console on the user's stderr for the command's own progress. Redirected at the file descriptors 1 and
    2, not sys.stdout: LiteRT, OpenVINO and absl write from C++ straight to them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    track(path)  # (until it is moved beside the results: a killed run leaves no hidden log)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    user = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8", errors="replace")
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # the kit's own warnings stay visible
        if own_warning(category, filename):
            user.write(f"warning: {message}\n")
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        with open(path, "w", buffering=1, encoding="utf-8", errors="replace") as log:
            streams = sys.stdout, sys.stderr
            for fd in saved:
                os.dup2(log.fileno(), fd)
            sys.stdout = sys.stderr = log  # Python-level prints and tracebacks too, wherever sys.std* pointed
            try:
                yield Console(file=user, emoji=False)
            finally:
                log.flush()
                sys.stdout, sys.stderr = streams
                for fd, copy in saved.items():
                    os.dup2(copy, fd)
    finally:
        warnings.showwarning = shown
        user.close()
        for copy in saved.values():
            os.close(copy)
