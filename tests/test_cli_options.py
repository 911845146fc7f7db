"""The generate / align / shard options are generated from their config dataclasses
(synthgen.options): every flag, default, choice list, metavar, type, help line and `--help` page
must stay exactly what the hand-written options of main (a7b90ed) were."""

import dataclasses
import json

import pytest
from click.testing import CliRunner

from conftest import DATA
from synthgen.alignment import AlignConfig
from synthgen.cli.main import cli
from synthgen.generation import GenerateConfig
from synthgen.shards import ShardConfig

CONFIGS = {"generate": GenerateConfig, "align": AlignConfig, "shard": ShardConfig}
UNSET = "UNSET"  # click's "no default given" (plain flags, required options)

# (flags, default, choices) of each option, as the hand-written options of main had them.
EXPECTED = {
    "generate": [
        (["--network"], UNSET, None),
        (["--out"], UNSET, None),
        (["--classes"], "all", None),
        (["--per-class"], 60, None),
        (["--count"], None, None),
        (["--views"], 1, None),
        (["--mix-layers"], None, None),
        (["--seed"], 0, None),
        (["--seeds"], None, None),
        (["--seed-pool"], None, None),
        (["--psi"], 1.0, None),
        (["--truncation-cutoff"], None, None),
        (["--noise-mode"], "const", ["const", "random", "none"]),
        (["--batch-size"], 64, None),
        (["--device"], "auto", None),
        (["--force-fp32"], UNSET, None),
        (["--precision"], "auto", ["auto", "fp32", "fp16"]),
        (["--chunk-size"], None, None),
        (["--format"], "png", ["png", "jpg"]),
        (["--jpeg-quality"], 95, None),
        (["--writers"], 4, None),
        (["--align"], UNSET, None),
        (["--max-retries"], 10, None),
        (["--align-size"], 112, None),
        (["--align-template"], "arcface", None),
        (["--min-face-size"], 20, None),
        (["--batched-align", "--per-image-align"], None, None),
        (["--shard-index"], None, None),
        (["--num-shards"], None, None),
        (["--overwrite"], UNSET, None),
        (["--quiet"], UNSET, None),
        (["--json"], UNSET, None),
    ],
    "align": [
        (["--in"], UNSET, None),
        (["--out"], UNSET, None),
        (["--size"], 112, None),
        (["--template"], "arcface", None),
        (["--detector"], "mtcnn", ["mtcnn"]),
        (["--min-face-size"], 20, None),
        (["--thresholds"], "0.6,0.7,0.7", None),
        (["--min-prob"], 0.0, None),
        (["--select"], "largest", ["largest", "center", "prob"]),
        (["--on-miss"], "skip", ["skip", "center-crop", "keep"]),
        (["--batch-size"], 32, None),
        (["--batched-detection", "--per-image-detection"], None, None),
        (["--detect-size"], 0, None),
        (["--device"], "auto", None),
        (["--workers"], 1, None),
        (["--overwrite"], UNSET, None),
        (["--quiet"], UNSET, None),
        (["--json"], UNSET, None),
    ],
    "shard": [
        (["--in"], UNSET, None),
        (["--out"], UNSET, None),
        (["--shard-size"], 10000, None),
        (["--encoding"], "raw", ["raw", "png", "jpeg"]),
        (["--jpeg-quality"], 95, None),
        (["--compression"], "none", ["none", "lzf", "gzip"]),
        (["--overwrite"], UNSET, None),
        (["--quiet"], UNSET, None),
    ],
}


def _default(p):
    return UNSET if repr(p.default) == "Sentinel.UNSET" else p.default


def _type(t) -> dict:
    d = {"class": type(t).__name__}
    for a in ("choices", "min", "max", "min_open", "max_open", "clamp", "file_okay", "dir_okay", "path_type",
              "exists", "case_sensitive"):
        if hasattr(t, a):
            v = getattr(t, a)
            d[a] = list(v) if isinstance(v, (tuple, list)) else (v.__name__ if isinstance(v, type) else v)
    return d


def snapshot(name: str) -> dict:
    """Everything click knows about a command's options, plus its --help page."""
    params = [{"opts": p.opts, "secondary_opts": p.secondary_opts, "default": p.default, "type": _type(p.type),
               "metavar": p.metavar, "help": getattr(p, "help", None), "required": p.required,
               "is_flag": getattr(p, "is_flag", None), "flag_value": getattr(p, "flag_value", None),
               "multiple": p.multiple, "nargs": p.nargs, "show_default": getattr(p, "show_default", None),
               "callback": p.callback is not None}
              for p in cli.commands[name].params]
    r = CliRunner().invoke(cli, [name, "--help"], terminal_width=100)
    assert r.exit_code == 0, r.output
    return json.loads(json.dumps({"params": params, "help": r.output}, default=repr))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_flags_defaults_choices_unchanged(name):
    got = [(p.opts + p.secondary_opts, _default(p), list(p.type.choices) if hasattr(p.type, "choices") else None)
           for p in cli.commands[name].params]
    assert got == [tuple(e) for e in EXPECTED[name]]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_option_attribute_and_help_page_unchanged(name):
    """Snapshot of main's hand-written options (tests/data/cli_options_main.json): types and ranges,
    metavars, help lines, flags, callbacks and the rendered --help page."""
    expected = json.loads((DATA / "cli_options_main.json").read_text())[name]
    got = snapshot(name)
    for e, g in zip(expected["params"], got["params"]):
        e = dict(e, callback=e["callback"] is not None)
        assert g == e, e["opts"]
    assert len(got["params"]) == len(expected["params"])
    assert got["help"] == expected["help"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cli_defaults_build_the_dataclass_defaults(name):
    """The options parse into exactly the config the dataclass defaults give."""
    cls = CONFIGS[name]
    required = {"generate": ["--network", "n.pkl", "--out", "o"]}.get(name, ["--in", "i", "--out", "o"])
    ctx = cli.commands[name].make_context(name, list(required))
    options = {k: v for k, v in ctx.params.items() if k not in ("quiet", "as_json")}
    required_fields = {f.name: options[f.name] for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
    assert cls(**options) == cls(**required_fields)
    ctx = cli.commands[name].make_context(name, required + ["--overwrite"])
    assert ctx.params["overwrite"] is True


def test_thresholds_text_form():
    ctx = cli.commands["align"].make_context("align", ["--in", "i", "--out", "o", "--thresholds", "0.5,0.6,0.7"])
    assert ctx.params["thresholds"] == (0.5, 0.6, 0.7)
    r = CliRunner().invoke(cli, ["align", "--in", "i", "--out", "o", "--thresholds", "0.5,0.6"])
    assert r.exit_code == 2 and "expected three numbers like 0.6,0.7,0.7, got '0.5,0.6'" in r.output


def test_choices_match_the_backend():
    """GenerateConfig lists precisions and noise modes itself so that the CLI need not import torch."""
    from synthgen.generation import config
    from synthgen.generators import stylegan2ada

    assert config.PRECISIONS == tuple(stylegan2ada.PRECISIONS)
    assert config.NOISE_MODES == tuple(stylegan2ada.NOISE_MODES)


def test_toml_validation_uses_the_same_choices_and_ranges():
    """`synthgen run` checks a [stage] section with the field metadata the CLI options come from."""
    from synthgen.errors import UsageError
    from synthgen.pipeline import validate

    base = {"out": "r", "generate": {"network": "n.pkl"}, "audit": {"enabled": False}}
    for stage, key, bad in (("generate", "noise_mode", "loud"), ("generate", "jpeg_quality", 101),
                            ("align", "select", "first"), ("align", "min_prob", 2.0),
                            ("shard", "encoding", "webp"), ("shard", "jpeg_quality", 0)):
        cfg = json.loads(json.dumps(base))
        cfg.setdefault(stage, {})[key] = bad
        with pytest.raises(UsageError) as e:
            validate(cfg)
        assert e.value.flag == f"[{stage}] {key}", (stage, key, e.value.flag)


def _validators():
    from synthgen.alignment import validate_config as validate_align
    from synthgen.generation import validate_config as validate_generate
    from synthgen.shards import validate as validate_shard

    return {"generate": validate_generate, "align": validate_align, "shard": validate_shard}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_declared_range_and_choice_is_checked_by_the_library(name, tmp_path):
    """A range or choice list declared on a field is enforced for configs built without the CLI
    (Python API, `synthgen run`), and the error names the field's flag."""
    from synthgen.errors import UsageError
    from synthgen.options import choices_of, flag_of

    cls, validate = CONFIGS[name], _validators()[name]
    required = {"generate": {"network": "n.pkl", "out": str(tmp_path / "o")}}.get(
        name, {"inp": str(tmp_path / "i"), "out": str(tmp_path / "o")})
    validate(cls(**required), host=False)  # the defaults pass
    checked = 0
    for f in dataclasses.fields(cls):
        bad = []
        if "range" in f.metadata:
            lo, hi = f.metadata["range"]
            bad += [lo - 1] if lo is not None else []
            bad += [hi + 1] if hi is not None else []
        if choices_of(f) is not None:
            bad.append("no-such-" + f.name)
        for value in bad:
            with pytest.raises(UsageError) as e:
                validate(cls(**dict(required, **{f.name: value})), host=False)
            assert e.value.flag == flag_of(f), (f.name, value, e.value.flag)
            checked += 1
    assert checked >= 4


def test_export_options_come_from_exportconfig_unchanged():
    """`synthgen export`'s options, once hand-written, now come from ExportConfig: same flags,
    defaults, choices and metavars as before, plus the webdataset/parquet formats and their
    --samples-per-file (1..unbounded)."""
    got = [(p.opts, _default(p), list(p.type.choices) if hasattr(p.type, "choices") else None, p.metavar)
           for p in cli.commands["export"].params]
    assert got == [
        (["directory"], UNSET, None, "DIR"),
        (["--format"], UNSET, ["recordio", "imagefolder", "webdataset", "parquet"], None),
        (["--out"], UNSET, None, "DIR"),
        (["--shuffle"], UNSET, None, None),
        (["--seed"], 0, None, "INT"),
        (["--jpeg-quality"], 95, None, "Q"),
        (["--image-format"], "png", ["png", "jpg"], None),
        (["--samples-per-file"], 10000, None, "N"),  # added with the webdataset and parquet formats
        (["--overwrite"], UNSET, None, None),
        (["--quiet"], UNSET, None, None),
    ]
    assert cli.commands["export"].params[5].type.min == 1 and cli.commands["export"].params[5].type.max == 100
    assert cli.commands["export"].params[7].type.min == 1 and cli.commands["export"].params[7].type.max is None


def test_audit_options_come_from_auditconfig_unchanged():
    """`synthgen audit`'s single-valued options come from AuditConfig's fields; the repeatable
    --matcher/--weights stay hand-written (one flag, several values). Same flags and defaults."""
    got = [(p.opts, _default(p), list(p.type.choices) if hasattr(p.type, "choices") else None)
           for p in cli.commands["audit"].params]
    assert [g[0][0] for g in got] == ["--synthetic", "--authentic", "--out", "--matcher", "--weights", "--arch",
                                      "--rule", "--alpha", "--combine", "--fmr", "--threshold", "--batch-size",
                                      "--device", "--max-per-class", "--top-k", "--label-map", "--cache-dir",
                                      "--fail-on-leak", "--quiet", "--json"]
    d = {g[0][0]: g[1:] for g in got}
    assert d["--arch"] == ("r100", ["r18", "r34", "r50", "r100"]) and d["--rule"] == (None, ["search", "pairwise"])
    assert d["--alpha"] == (0.01, None) and d["--fmr"] == (1e-3, None) and d["--top-k"] == (5, None)
    assert d["--synthetic"] == (UNSET, None) and d["--label-map"] == ("auto", ["auto", "name", "index"])
