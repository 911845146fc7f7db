"""Ctrl-C at any moment, imports included, gives the one line and exit 130; --help and --version
import no torch (issue 21, item 8). Before: the CLI imported torch and every command before its
handler was set, and a Ctrl-C in the first 2-4 s printed a KeyboardInterrupt traceback."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import MICRO

NET = str(MICRO / "network-scrubbed-p4.pkl")


def test_help_and_version_import_no_torch():
    code = ("import sys\nfrom synthgen.cli.main import cli\n"
            "for args in (['--help'], ['--version'], ['audit', '--help'], ['evaluate', '--help']):\n"
            "    try:\n        cli.main(args, standalone_mode=False)\n    except SystemExit:\n        pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\nprint('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_the_entry_says_what_the_group_says():
    from synthgen.cli import entry, main

    assert entry.INTERRUPTED == main.INTERRUPTED


@pytest.mark.slow  # several interpreter starts (~10 s)
def test_ctrl_c_at_any_moment_is_one_line_and_exit_130():
    codes = []
    for delay in (0.15, 0.3, 0.6, 1.2, 2.0):  # before ~0.05 s Python itself is starting
        p = subprocess.Popen([sys.executable, "-m", "synthgen", "info", NET], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONFAULTHANDLER="0"))
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        assert "Traceback" not in err, err[-2000:]
        codes.append(p.returncode)
        if p.returncode == 0:  # finished before the signal arrived
            continue
        # 130, or death by SIGINT itself (-2 here), which a shell reports as 130 too: seen once in ~40 runs,
        # when the signal lands while Python is already exiting on the first one
        assert p.returncode in (130, -signal.SIGINT), (delay, p.returncode, err[-500:])
        if p.returncode == -signal.SIGINT and not err.strip():
            continue  # on a loaded machine the signal can land before Python installs its own handler: killed, silent
        assert err.strip().splitlines() == ["interrupted: rerun the same command to resume"], err
    assert codes.count(130) + codes.count(-signal.SIGINT) >= 3, codes  # the early ones did land mid-run
