"""`synthgen` click group. Commands parse and validate options, then call one library function.

Exit codes: 0 ok, 1 data error (a file is not what it should be), 2 usage error (bad flag),
3 audit found a leak and 4 audit inconclusive with --fail-on-leak, 130 interrupted (Ctrl-C; rerun to resume). Every error is
one `Error: ...` line on stderr; tracebacks only with `synthgen --debug ...`.
"""

from __future__ import annotations

import errno
import os
import sys

import click

from synthgen import __version__
from synthgen.errors import clean_message, describe_exception


INTERRUPTED = "interrupted: rerun the same command to resume"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


def _debug_requested(args) -> bool:
    """`--debug` among the group options (before the command name)."""
    for a in args:
        if a == "--debug":
            return True
        if not a.startswith("-"):
            return False
    return False


def _error(line: str) -> None:
    click.echo(f"Error: {line}", err=True)


class _Group(click.Group):
    """Every failure becomes one `Error: ...` line on stderr and an exit code (tracebacks with
    --debug): synthgen errors, click's parsing errors, OSError (ENOSPC, EACCES, EROFS...),
    MemoryError, RecursionError and, as a last resort, anything else. Ctrl-C exits 130."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:  # a caller that wants the raw exceptions
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        args = list(sys.argv[1:] if args is None else args)
        debug = _debug_requested(args)
        where = "synthgen" + next((f" {a}" for a in args if not a.startswith("-")), "")
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except SystemExit:
            raise
        except (click.Abort, KeyboardInterrupt):
            click.echo(INTERRUPTED, err=True)
            sys.exit(EXIT_INTERRUPTED)
        except click.exceptions.NoArgsIsHelpError as e:  # bare `synthgen`: the help text
            e.show()
            sys.exit(e.exit_code)
        except click.ClickException as e:  # raised while click parses: bad flag, missing option, ...
            msg = clean_message(e.format_message())
            ctx = getattr(e, "ctx", None)
            if isinstance(e, click.UsageError) and ctx is not None:
                msg = msg.rstrip(".") + f"; see '{ctx.command_path} --help'"
            _error(msg)
            sys.exit(e.exit_code)
        except BaseException as e:  # ours, OSError, MemoryError, RecursionError, anything unexpected
            if isinstance(e, OSError) and e.errno == errno.EPIPE:  # `synthgen info x | head`
                sys.stdout = open(os.devnull, "w")
                sys.exit(1)
            if debug:
                raise
            code, line = describe_exception(e, where)
            _error(line)
            sys.exit(code)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="synthgen")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx, debug):
    """synthgen: synthetic face-recognition datasets, generate -> align -> shard -> audit."""
    ctx.ensure_object(dict)["debug"] = debug


def _register():
    from .commands import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)


_register()


def main(argv=None):
    return cli.main(args=argv, prog_name="synthgen")


if __name__ == "__main__":  # `python -m synthgen.cli.main`: use the module the commands registered on
    from synthgen.cli.main import main as _main

    sys.exit(_main())
