"""--quiet silences progress only: verdicts, report paths, warnings and one-line summaries always
print; the run table shows whole summaries (before: JSON cut off at 90 characters)."""

import pytest
from click.testing import CliRunner

from conftest import MICRO
from synthgen.cli.main import cli
from test_refusals import faces


def invoke(args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.slow  # two audits with their report pages (~4 s)
def test_audit_quiet_still_prints_verdict_report_and_warnings(tmp_path):
    faces(tmp_path / "syn")
    faces(tmp_path / "auth", seed=1)
    r = invoke(["audit", "--synthetic", tmp_path / "syn", "--authentic", tmp_path / "auth", "--out", tmp_path / "a",
                "--matcher", "pixels", "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "verdict: " in r.stdout and f"report: {tmp_path / 'a'}/report.html" in r.stdout
    assert "warning: " in r.stderr and "32x32" in r.stderr
    j = invoke(["audit", "--synthetic", tmp_path / "syn", "--authentic", tmp_path / "auth", "--out", tmp_path / "a",
                "--matcher", "pixels", "--device", "cpu", "--json"])
    assert j.exit_code == 0 and j.stdout.lstrip().startswith("{") and "32x32" in j.stderr  # stdout stays JSON


@pytest.mark.slow  # a whole run (~3 s)
def test_generate_and_run_quiet_print_their_summaries(tmp_path):
    net = MICRO / "network-scrubbed-p4.pkl"
    r = invoke(["generate", "--network", net, "--out", tmp_path / "g", "--classes", "0", "--per-class", "2",
                "--device", "cpu", "--quiet"])
    assert r.exit_code == 0 and "complete: 2 written" in r.stdout
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'out = "{tmp_path / "run"}"\n[generate]\nnetwork = "{net}"\nclasses = "0-1"\nper_class = 2\n'
                   'device = "cpu"\n[align]\nsize = 32\non_miss = "center-crop"\ndevice = "cpu"\n'
                   '[audit]\nenabled = false\n')
    r = invoke(["run", cfg, "--quiet"])
    assert r.exit_code == 0, r.output
    assert "[generate] running" not in r.stdout  # the stage log is progress
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.split()}
    assert "counts: no_face 4; written 4" in rows["align"]  # noise: MTCNN finds no face, centre crops
    assert "total 4; classes 2; shards 1" in rows["shard"]
    assert all("{" not in line for line in rows.values())  # words, not truncated JSON


def test_a_complete_generate_rerun_rewrites_nothing(tmp_path):
    """Before: the rerun rewrote manifest.jsonl and run.json (a new `finished` time)."""
    net = MICRO / "network-scrubbed-p4.pkl"
    args = ["generate", "--network", net, "--out", tmp_path / "g", "--classes", "0", "--per-class", "2", "--device", "cpu"]
    assert invoke(args).exit_code == 0
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "g").rglob("*") if p.is_file()}
    r = invoke(args)
    assert r.exit_code == 0 and "0 written, 2 already there" in r.stdout
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "g").rglob("*") if p.is_file()} == files


@pytest.mark.slow  # a whole run (~2 s)
def test_run_prints_the_audit_verdict_and_report(tmp_path):
    from test_refusals import faces as make_faces

    make_faces(tmp_path / "auth")
    net = MICRO / "network-scrubbed-p4.pkl"
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'out = "{tmp_path / "run"}"\n[generate]\nnetwork = "{net}"\nclasses = "0-1"\nper_class = 2\n'
                   'device = "cpu"\n[align]\nsize = 32\non_miss = "center-crop"\ndevice = "cpu"\n'
                   f'[audit]\nauthentic = "{tmp_path / "auth"}"\nmatcher = "pixels"\ndevice = "cpu"\n')
    r = invoke(["run", cfg, "--quiet"])
    assert r.exit_code == 0, r.output
    assert "audit: INCONCLUSIVE" in r.stdout and f"report: {tmp_path / 'run'}/audit/report.html" in r.stdout
