"""Options written once: a stage config's dataclass fields carry their command-line form.

`opt(default, help=..., ...)` is `dataclasses.field` with metadata; `click_options(Config)` turns
the fields into click options (the CLI) and `check_choices` / `check_ranges` apply the same
choices and ranges to a config built any other way (`synthgen run`'s TOML, the Python API).

Metadata keys (all optional):
    help         the --help text (click adds `[default: ...]` from the field default)
    metavar      the value placeholder in --help
    choices      a tuple, or a callable returning one (e.g. a registry's names): click.Choice
                 on the command line, check_choices elsewhere
    cli_choices  what the command line offers when it is narrower than `choices`
    range        (lo, hi), None = unbounded: click.IntRange / FloatRange, and check_ranges
    type         the command line's type instead of the derived one (`int`: any integer, the
                 range is then checked by the library with its own message)
    path         "dir" | "file" | "any": a click.Path of str
    flag         the flag when it is not `--field-name` (`inp` -> `--in`)
    off_flag     for a bool that defaults to None (auto): `--flag/--off-flag`
    parse        text -> value for a tuple field (`--thresholds 0.6,0.7,0.7`); ValueError(message)
    unit         what the number counts (px, images, ...)

A bool without `off_flag` is a plain `--flag` (is_flag). Fields without a default are required.
"""

from __future__ import annotations

import dataclasses

from synthgen.errors import UsageError

_MISSING = dataclasses.MISSING


def opt(default=_MISSING, **meta):
    """A dataclass field with its option metadata (see the module docstring); no default: required."""
    return dataclasses.field(default=default, metadata=meta)


def _field(cls, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def choices_of(f: dataclasses.Field, cli: bool = False) -> tuple | None:
    c = (f.metadata.get("cli_choices") if cli else None) or f.metadata.get("choices")
    return tuple(c() if callable(c) else c) if c is not None else None


def _base_type(f: dataclasses.Field) -> str:
    """'int' for `int | None`, from the (string) annotation."""
    kinds = [t.strip() for t in str(f.type).split("|")] if isinstance(f.type, str) else [f.type.__name__]
    return next((t for t in kinds if t != "None"), "None")


def _click_option(f: dataclasses.Field):
    import click

    m = f.metadata
    flag = flag_of(f)
    kw = {}
    if "help" in m:
        kw["help"] = m["help"]
    if "metavar" in m:
        kw["metavar"] = m["metavar"]
    base = _base_type(f)
    if base == "bool":
        if "off_flag" in m:
            return click.option(f"{flag}/{m['off_flag']}", f.name, default=f.default, **kw)
        if f.default not in (False, _MISSING):
            kw["default"] = f.default
        return click.option(flag, f.name, is_flag=True, **kw)
    if f.default is _MISSING:
        kw["required"] = True
    else:
        kw["default"] = f.default
    choices = choices_of(f, cli=True)
    if "type" in m:
        kw["type"] = m["type"]
    elif choices is not None:
        kw["type"] = click.Choice(list(choices))
    elif "range" in m:
        lo, hi = m["range"]
        kw["type"] = (click.FloatRange if base == "float" else click.IntRange)(min=lo, max=hi)
    elif "path" in m:
        okay = {"dir": {"file_okay": False}, "file": {"dir_okay": False}, "any": {}}[m["path"]]
        kw["type"] = click.Path(path_type=str, **okay)
    elif base in ("int", "float"):
        kw["type"] = {"int": int, "float": float}[base]
    if "parse" in m:
        parse = m["parse"]

        def callback(ctx, param, value, parse=parse):
            try:
                return parse(value)
            except ValueError as e:
                raise click.BadParameter(str(e)) from None

        kw["callback"] = callback
        if isinstance(kw.get("default"), tuple):  # shown and parsed in its text form
            kw["default"] = ",".join(str(v) for v in kw["default"])
    return click.option(flag, f.name, **kw)


def click_options(cls, exclude=(), only=None):
    """Decorator adding one click option per field of `cls` (field order; `only` picks and orders
    a subset). Each option's parameter name is the field name, so `cls(**options)` builds the config."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = list(only) if only is not None else [n for n in fields if n not in exclude]
    decorators = [_click_option(fields[n]) for n in names]

    def decorate(func):
        for d in reversed(decorators):  # click lists options in the order they are applied, bottom-up
            func = d(func)
        return func

    return decorate


def check_choices(cfg, names, message: str = "got {value!r}, expected one of {choices}") -> None:
    """For each named field, in order: a UsageError naming its flag unless the value is one of
    its metadata's choices."""
    for name in names:
        f = _field(type(cfg), name)
        value, choices = getattr(cfg, name), choices_of(f)
        if value not in choices:
            raise UsageError(message.format(value=value, choices=", ".join(choices)), flag_of(f))


def check_ranges(cfg, names) -> None:
    """check_range for each named field, in order, with its metadata's range."""
    from synthgen.runs import check_range

    for name in names:
        f = _field(type(cfg), name)
        lo, hi = f.metadata["range"]
        check_range(getattr(cfg, name), flag_of(f), lo, hi)
