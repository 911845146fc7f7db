"""`synthgen` click group. Commands parse and validate options, then call one library function.

Exit codes: 0 ok, 1 data error (a file is not what it should be), 2 usage error (bad flag),
3 audit found a leak with --fail-on-leak. Tracebacks only with `synthgen --debug ...`.
"""

from __future__ import annotations

import json
import sys

import click

from synthgen import __version__
from synthgen.errors import SynthgenError


class _Group(click.Group):
    """Turns synthgen errors into clean messages and exit codes (tracebacks with --debug)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SynthgenError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if e.exit_code == 2:
                raise click.UsageError(str(e)) from None
            err = click.ClickException(str(e))
            err.exit_code = e.exit_code
            raise err from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="synthgen")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx, debug):
    """synthgen: synthetic face-recognition datasets, generate -> align -> shard -> audit."""
    ctx.ensure_object(dict)["debug"] = debug


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


def _register():
    from . import commands  # noqa: F401  (registers the commands on `cli`)


_register()


def main(argv=None):
    return cli.main(args=argv, prog_name="synthgen")


if __name__ == "__main__":  # `python -m synthgen.cli.main`: use the module the commands registered on
    from synthgen.cli.main import main as _main

    sys.exit(_main())
