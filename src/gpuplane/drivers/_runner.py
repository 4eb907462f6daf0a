"""Wrapper process the local driver starts around every task command.

``python -m gpuplane.drivers._runner EXIT_FILE -- argv...`` runs ``argv`` in
the wrapper's process group (the driver made it a session leader), forwards
SIGTERM/SIGINT sent to the wrapper alone, and writes the command's exit code
(``128 + n`` for a signal ``n``) atomically to EXIT_FILE. The exit file is what
lets a restarted gpuplane learn how an adopted task ended: the task is no
longer its child, so it cannot wait for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m gpuplane.drivers._runner EXIT_FILE -- COMMAND...", file=sys.stderr)
        return 2
    exit_file, command = argv[0], argv[2:]
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        print(f"gpuplane: cannot start {command[0]!r}: {exc.strerror or exc}", file=sys.stderr,
              flush=True)
        code = 127
    else:
        def forward(signum: int, _frame: object) -> None:
            try:
                child.send_signal(signum)
            except ProcessLookupError:
                pass

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        rc = child.wait()
        code = 128 - rc if rc < 0 else rc
    tmp = f"{exit_file}.tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{code}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, exit_file)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
