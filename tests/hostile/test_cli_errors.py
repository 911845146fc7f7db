"""One-line errors everywhere: every failure of the CLI is exactly one `Error: ...` line on stderr,
exit 1 (data) or 2 (usage), no traceback unless `synthgen --debug`; control characters are
escaped; torch's advice to load with weights_only=False is never passed on; read-only output
folders are named."""

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import MICRO
from hostile_util import one_error_line
from synthgen.cli.main import cli
from synthgen.errors import clean_message, describe_exception

NET = str(MICRO / "network-scrubbed-p4.pkl")


def invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# ----------------------------------------------------------------------------------------------
# Python-level failures become one line (the seam each test patches is where the real error rises)


def test_memory_error_is_one_line_and_debug_shows_it(monkeypatch, tmp_path):
    import synthgen.generators as gens

    def oom(*a, **k):
        raise MemoryError()

    monkeypatch.setattr(gens, "load_generator", oom)
    r = invoke(["info", NET])
    assert r.exit_code == 1
    one_error_line(r.stderr, "synthgen info", "ran out of memory", "--debug")
    r = invoke(["--debug", "info", NET])
    assert r.exit_code == 1 and isinstance(r.exception, MemoryError)


def test_recursion_error_is_one_line(monkeypatch):
    import synthgen.generators as gens

    def deep(*a, **k):
        def f(n):
            return f(n + 1)
        return f(0)

    monkeypatch.setattr(gens, "load_generator", deep)
    r = invoke(["info", NET])
    assert r.exit_code == 1
    one_error_line(r.stderr, "nested too deeply", "RecursionError")


def test_deeply_nested_template_json_names_the_file(tmp_path):
    """A real RecursionError source: json.loads of a 100,000-deep list."""
    t = tmp_path / "deep.json"
    t.write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "in" / "a").mkdir(parents=True)
    r = invoke(["align", "--in", tmp_path / "in", "--out", tmp_path / "out", "--template", t])
    assert r.exit_code == 2
    one_error_line(r.stderr, "--template", "deep.json", "nested too deeply")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("code,found,fix", [
    (errno.ENOSPC, "no space left on device (ENOSPC)", "rerun the same command to resume"),
    (errno.EACCES, "permission denied (EACCES)", "permissions"),
    (errno.EROFS, "read-only file system (EROFS)", "writable file system"),
    (errno.EIO, "input/output error (EIO)", "check the disk"),
])
def test_os_errors_name_the_real_file(monkeypatch, tmp_path, code, found, fix):
    import synthgen.info as info

    def fail(src, dst, overwrite=False):
        raise OSError(code, os.strerror(code), str(tmp_path / f".net.pt.tmp-{os.getpid()}"))

    monkeypatch.setattr(info, "convert_network", fail)
    r = invoke(["convert", NET, tmp_path / "net.pt"])
    assert r.exit_code == 1
    line = one_error_line(r.stderr, str(tmp_path / "net.pt") + ":", found, fix)
    assert ".tmp-" not in line  # the file the user asked for, not our temp twin


def test_unexpected_exception_last_resort(monkeypatch):
    import synthgen.info as info

    monkeypatch.setattr(info, "network_info", lambda p: {}["missing"])
    r = invoke(["info", NET])
    assert r.exit_code == 1
    one_error_line(r.stderr, "synthgen info: unexpected KeyError", "rerun with --debug for the traceback")
    r = invoke(["--debug", "info", NET])
    assert r.exit_code == 1 and isinstance(r.exception, KeyError)


def test_keyboard_interrupt_exits_130_with_resume_hint(monkeypatch):
    import synthgen.info as info

    def interrupted(p):
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "network_info", interrupted)
    r = invoke(["info", NET])
    assert r.exit_code == 130
    assert r.stderr.strip().splitlines()[-1] == "interrupted: rerun the same command to resume"
    assert "Aborted" not in r.output and "Traceback" not in r.output


# ----------------------------------------------------------------------------------------------
# Errors raised while click parses


@pytest.mark.parametrize("args,needle", [
    (["generate", "--network", NET, "--out", "o", "--per-class", "two"], "--per-class"),
    (["generate", "--network", NET, "--out", "o", "--bogus"], "--bogus"),
    (["generate", "--out", "o"], "--network"),
    (["align", "--in", "i", "--out", "o", "--thresholds", "1,2"], "--thresholds"),
    (["nosuchcommand"], "nosuchcommand"),
])
def test_click_parse_errors_are_one_line_exit_2(tmp_path, args, needle):
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2
    one_error_line(r.stderr, needle, "--help")
    assert not (Path.cwd() / "o").exists()


def test_bare_synthgen_still_prints_help():
    r = CliRunner().invoke(cli, [])
    assert "Commands:" in r.output


# ----------------------------------------------------------------------------------------------
# Control characters and unsafe advice


def test_newline_in_refused_global_cannot_forge_a_second_error_line(tmp_path):
    mod, name = b"posix\nError: forged line", b"system"
    evil = (b"\x80\x04" + b"\x8c" + bytes([len(mod)]) + mod + b"\x94" + b"\x8c" + bytes([len(name)]) + name
            + b"\x94\x93\x94)R.")
    p = tmp_path / "evil.pkl"
    p.write_bytes(evil)
    r = invoke(["info", p])
    assert r.exit_code == 1
    line = one_error_line(r.stderr, "evil.pkl", "\\nError: forged line")
    assert line.count("Error:") == 2  # the forged text is inside our line, escaped


def test_control_characters_in_a_file_name_are_escaped(tmp_path):
    p = tmp_path / "a\nError: fake\x1b[31m\u202e.pkl"
    r = invoke(["info", p])
    assert r.exit_code == 2  # a named input that does not exist is a usage error, in every command
    line = one_error_line(r.stderr, "a\\nError: fake\\x1b[31m\\u202e.pkl")
    assert "\x1b" not in line and "\u202e" not in line


def test_weights_only_false_advice_is_never_shown(tmp_path):
    import argparse

    import torch

    p = tmp_path / "evil.pt"
    torch.save({"format": "synthgen.stylegan2ada", "x": argparse.Namespace(a=1)}, p)
    for args in (["info", p], ["convert", p, tmp_path / "out.pt"], ["generate", "--network", p, "--out", tmp_path / "o"]):
        r = invoke(args)
        assert r.exit_code == 1
        line = one_error_line(r.stderr, "evil.pt")
        assert "False" not in line and "safe_globals" not in line and "trust" not in line
    # and the central filter catches torch's text however it reaches the CLI
    torch_text = ("Weights only load failed. This file can still be loaded, to do so you have two options, do those steps "
                  "only if you trust the source of the checkpoint. \n\t(1) Re-running `torch.load` with `weights_only` "
                  "set to `False` will likely succeed, but it can result in arbitrary code execution.\n\tWeightsUnpickler "
                  "error: Unsupported global: GLOBAL argparse.Namespace was not an allowed global by default. Please use "
                  "`torch.serialization.add_safe_globals([argparse.Namespace])` to allowlist this global.")
    code, line = describe_exception(RuntimeError(torch_text), "synthgen info")
    assert code == 1 and "argparse.Namespace" in line
    assert "False" not in line and "safe_globals" not in line and "\n" not in line
    assert clean_message("loads with torch.load(weights_only=True)") == "loads with torch.load(weights_only=True)"


# ----------------------------------------------------------------------------------------------
# Malformed metadata


def test_malformed_run_json_in_a_run_dir(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("[1, 2")
    r = invoke(["run", "--out", tmp_path / "run", "--network", NET, "--set", "audit.enabled=false",
                "--set", "generate.classes='0'", "--set", "generate.per_class=1", "--quiet"])
    assert r.exit_code == 1
    one_error_line(r.stderr, "run.json", "not a run record", "delete it")
    assert sorted(os.listdir(tmp_path / "run")) == ["run.json"]


def test_generate_marker_that_is_not_an_object_is_refused_cleanly(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "run.json").write_text("[1]")
    (out / "000000").mkdir()
    (out / "000000" / "000000.png").write_bytes(b"x")
    r = invoke(["generate", "--network", NET, "--out", out, "--classes", "0", "--per-class", "1", "--quiet"])
    assert r.exit_code == 2
    one_error_line(r.stderr, "--out", "different config", "--overwrite")


# ----------------------------------------------------------------------------------------------
# Read-only output folders (a real read-only mount as root, chmod otherwise)


def _readonly_runner(ro: Path):
    """-> function(args) running `python -m synthgen ARGS` with `ro` read-only, or None."""
    ro.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "synthgen"]
    if os.geteuid() != 0:
        ro.chmod(0o555)
        return lambda args: subprocess.run(base + [str(a) for a in args], capture_output=True, text=True, timeout=120)
    unshare = shutil.which("unshare")
    if not unshare:
        return None
    probe = subprocess.run([unshare, "-m", "sh", "-c", f'mount -t tmpfs -o ro,size=64k tmpfs "{ro}"'],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return None
    script = 'mount -t tmpfs -o ro,size=64k tmpfs "$0" && exec "$@"'
    return lambda args: subprocess.run([unshare, "-m", "sh", "-c", script, str(ro), *base, *map(str, args)],
                                       capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_read_only_output_folders(tmp_path):
    ro = tmp_path / "ro"
    run = _readonly_runner(ro)
    if run is None:
        pytest.skip("cannot make a read-only folder here (root without mount namespaces)")
    (tmp_path / "in" / "a").mkdir(parents=True)
    shutil.copy(MICRO / "png" / "noise-const" / "trunc1" / "class0" / "seed0000.png", tmp_path / "in" / "a" / "x.png")
    cases = [
        (["convert", NET, ro / "net.pt"], "OUT"),
        (["generate", "--network", NET, "--out", ro / "g", "--classes", "0", "--per-class", "1", "--quiet"], "--out"),
        (["generate", "--network", NET, "--out", ro, "--classes", "0", "--per-class", "1", "--quiet"], "--out"),
        (["align", "--in", tmp_path / "in", "--out", ro / "a", "--quiet"], "--out"),
        (["run", "--out", ro / "r", "--network", NET, "--set", "audit.enabled=false", "--quiet"], "out"),
    ]
    for args, flag in cases:
        p = run(args)
        assert p.returncode == 2, (args, p.stderr)
        line = one_error_line(p.stderr, flag, str(ro))
        assert "Read-only file system" in line or "Permission denied" in line
    assert not any(ro.iterdir())  # the real folder under the mount was never written either


def test_info_escapes_strings_read_from_the_file(tmp_path, uncond_ckpt):
    """A checkpoint's provenance is attacker text: `info` cannot be made to print forged lines."""
    import torch

    payload = torch.load(uncond_ckpt, weights_only=True)
    payload["provenance"] = json.dumps({"source_format": "x)\nsha256         0000forged\x1b[2K"})
    p = tmp_path / "forged.pt"
    torch.save(payload, p)
    r = invoke(["info", p])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert len(lines) == 12 and sum(ln.startswith("sha256") for ln in lines) == 1
    assert "\\nsha256         0000forged\\x1b[2K" in lines[2] and "\x1b" not in r.stdout
