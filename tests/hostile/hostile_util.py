"""Helpers for hostile-input tests: run synthgen in a child process under a memory limit."""

import os
import resource
import subprocess
import sys


LIMIT = 5 << 30  # address space: importing torch alone reserves about 3.5 GiB of it


def run_limited(args, cwd=None, limit=LIMIT, timeout=120):
    """`python -m synthgen ARGS` with RLIMIT_AS; returns CompletedProcess (text)."""

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = dict(os.environ, PYTHONFAULTHANDLER="0")
    return subprocess.run([sys.executable, "-m", "synthgen", *map(str, args)], cwd=cwd, preexec_fn=cap,
                          capture_output=True, text=True, timeout=timeout, env=env)


def assert_one_line_error(proc, code=1, *needles):
    """Exit `code`, stderr is exactly one `Error:` line, no traceback, and it names what it should."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def one_error_line(stderr: str, *needles) -> str:
    """stderr is exactly one `Error:` line, no traceback, naming every needle."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]
