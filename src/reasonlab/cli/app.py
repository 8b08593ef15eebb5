"""The root ``reasonlab`` app, assembled from a module per command group, and ``main``: the one
place that turns errors into exit codes.

Exit codes: 0 success, 2 bad input (one line naming the field or file, no traceback),
1 internal error, 130 interrupted (with one line saying what was saved and how to resume).
``reasonlab`` without a command (or ``reasonlab analyze`` without one) prints the help, as
``--help`` does, and exits 0.
"""

from __future__ import annotations

import shlex
import sys

import typer
from typer.main import get_command

from reasonlab.cli import analyze, bench
from reasonlab.cli.claims import claims
from reasonlab.cli.config import config_keys
from reasonlab.cli.data import data
from reasonlab.cli.export import export
from reasonlab.cli.run import run
from reasonlab.cli.runs import runs
from reasonlab.cli.study import study
from reasonlab.cli.sweep import sweep
from reasonlab.config import ConfigError
from reasonlab.config.limits import cut
from reasonlab.core.errors import RunFailed

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="reasonlab: controlled experiments on how small sequence models learn to reason.",
    epilog="Exit codes: 0 success, 2 bad input, 1 internal error, 130 interrupted. "
    "Every config key with its default: reasonlab config --defaults.",
)
app.command("run")(run)
app.command("data")(data)
app.command("study")(study)
app.command("sweep")(sweep)
app.command("runs")(runs)
app.command("export")(export)
app.command("config")(config_keys)
app.command("claims")(claims)
app.add_typer(bench.app, name="bench")
app.add_typer(analyze.app, name="analyze")


def _print_version(value: bool) -> None:
    if value:
        from reasonlab import __version__

        typer.echo(f"reasonlab {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print the version and exit.",
    ),
) -> None:
    pass


def _interrupted_line(args: list[str]) -> str:
    """One line for an interrupt (Ctrl-C, SIGTERM): how far the run got, what it kept and the
    command that continues it. The run comes from the record the training progress leaves."""
    from reasonlab.runs.folder import RunDir
    from reasonlab.training.progress import current_run

    record, command = current_run(), args[0] if args else ""
    run = RunDir(record.folder) if record is not None else None
    try:
        training = run is not None and (run.summary() or {}).get("status") == "interrupted"
    except ConfigError:
        training = False
    state = "interrupted"
    if training:
        steps = run.checkpoint_steps()
        kept = f"checkpoint of step {steps[-1]} kept" if steps else "no checkpoint yet"
        state = f"interrupted at step {record.step} of {run.path} ({kept})"
    if command == "study":
        return f"{state}; completed runs are kept; resume with: reasonlab {shlex.join(args)}"
    if command == "run" and training:
        return f"{state}; resume with: reasonlab run --resume {shlex.quote(str(run.path))}"
    if command == "run":
        return "interrupted before training started; nothing to resume"
    return state


def _is_usage_error(error: Exception) -> bool:
    """Click's (or Typer's vendored click's) usage errors: bad option, missing argument, ..."""
    return callable(getattr(error, "format_message", None)) and getattr(error, "exit_code", 0) == 2


def _shows_help_when_bare(group: object) -> bool:
    """A command group named alone (``reasonlab analyze``) prints its help, unless it runs a
    default command (``reasonlab bench`` is ``reasonlab bench step``)."""
    return hasattr(group, "commands") and getattr(group, "default_command", None) is None


def os_error_line(error: OSError) -> str:
    """One line for a file-system error: the path and the cause."""
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error} (errno {error.errno})"


def main(argv: list[str] | None = None) -> None:
    """``reasonlab ARGS``: runs the command and exits with its code (0, 1, 2 or 130)."""
    from reasonlab.training.progress import forget_run

    args = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    command = get_command(app)
    # Bare `reasonlab` (or `reasonlab analyze`) is its --help (exit 0), not "Missing command".
    if not args or (len(args) == 1 and _shows_help_when_bare(command.commands.get(args[0]))):
        args = [*args, "--help"]
    forget_run()  # a run record left by an earlier call in this process says nothing about this one
    try:
        code = command.main(args=args, standalone_mode=False, prog_name="reasonlab")
    except ConfigError as error:
        print(f"error: {cut(str(error), 1000)}", file=sys.stderr)
        sys.exit(2)
    except RunFailed as error:  # the run stopped itself (a NaN loss): recorded in its summary
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except OSError as error:  # the file system refused (full, read-only, no permission)
        print(f"error: {os_error_line(error)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(_interrupted_line(args), file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        if type(error).__name__ == "Abort":
            print(_interrupted_line(args), file=sys.stderr)
            sys.exit(130)
        if not _is_usage_error(error):
            raise
        message = " ".join(error.format_message().split())
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    if code == 130:  # Typer turns KeyboardInterrupt (Ctrl-C, or SIGTERM in run/study) into 130
        print(_interrupted_line(args), file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)
