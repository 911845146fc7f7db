"""The `synthgen` console script: Ctrl-C is answered with one line and exit 130 from the first
moment, imports included (the group's own handler takes over once the commands are loaded)."""

import os
import signal
import sys

INTERRUPTED = "interrupted: rerun the same command to resume"  # as synthgen.cli.main says it


def _interrupted_while_starting(signum, frame):
    sys.stderr.write(INTERRUPTED + "\n")
    os._exit(130)  # nothing has been opened for writing yet: no cleanup to run


def main():
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.default_int_handler:  # leave an ignored SIGINT (a background job) ignored
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    from synthgen.cli.main import main as run

    signal.signal(signal.SIGINT, previous)
    return run()
