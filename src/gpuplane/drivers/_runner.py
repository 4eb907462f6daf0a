"""Wrapper process the local driver starts around every task command.

``python -I -S .../drivers/_runner.py EXIT_FILE [--env FILE] [--cgroup DIR]... [--sandbox]
-- argv...`` (standard library only: the driver runs it isolated, without site-packages) runs ``argv`` in the wrapper's process group (the driver made it a session
leader), forwards SIGTERM/SIGINT sent to the wrapper alone, and writes the command's exit code
(``128 + n`` for a signal ``n``) atomically to EXIT_FILE. The exit file is what lets a
restarted gpuplane learn how an adopted task ended: the task is no longer its child, so it
cannot wait for it.

The wrapper stays outside the sandbox and keeps the server's privileges (it writes into
gpuplane's state folder), so it never runs with the task's environment itself:

- ``--env FILE``: the task's environment as JSON, written by the driver (mode 0600); read and
  removed here, and handed to the command only.
- ``--cgroup DIR``: the child joins that cgroup before it executes ``argv`` (repeatable: one
  per cgroup v1 hierarchy); the folders are removed when the command has ended.
- ``--sandbox``: ``argv`` is a bubblewrap command (``drivers/sandbox.py``). The environment
  goes to bubblewrap through ``--args FD`` (``--clearenv --setenv ...``: not visible in the
  host's process list), and bubblewrap runs with SIGTERM and SIGINT ignored, so a signal to
  the process group reaches the task (which restores the default handling) instead of
  killing bubblewrap, whose death would kill the task at once without its grace period.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

_SANDBOX_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _parse(argv: list[str]) -> tuple[str, dict[str, object], list[str]]:
    if len(argv) < 3 or "--" not in argv[1:]:
        raise ValueError("usage")
    exit_file, rest = argv[0], argv[1:]
    cut = rest.index("--")
    opts: dict[str, object] = {"env": None, "cgroups": [], "sandbox": False}
    i = 0
    while i < cut:
        flag = rest[i]
        if flag == "--sandbox":
            opts["sandbox"] = True
            i += 1
        elif flag in ("--env", "--cgroup") and i + 1 < cut:
            if flag == "--env":
                opts["env"] = rest[i + 1]
            else:
                opts["cgroups"].append(rest[i + 1])  # type: ignore[union-attr]
            i += 2
        else:
            raise ValueError(f"unknown option {flag}")
    command = rest[cut + 1:]
    if not command:
        raise ValueError("no command")
    return exit_file, opts, command


def _load_env(path: str | None) -> dict[str, str] | None:
    if path is None:
        return None
    try:
        with open(path) as fh:
            env = json.load(fh)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    return {str(k): str(v) for k, v in env.items()}


def _env_args_fd(env: dict[str, str]) -> int:
    """A memory file holding ``--clearenv --setenv K V ...`` NUL-separated (bwrap ``--args``)."""
    fd = os.memfd_create("gpuplane-env", 0)
    words = ["--clearenv"]
    for k, v in env.items():
        words += ["--setenv", k, v]
    os.write(fd, b"".join(w.encode() + b"\0" for w in words))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _preexec(cgroups: list[str], sandbox: bool):  # noqa: ANN202
    def prepare() -> None:  # runs in the child, before exec (the runner has no threads)
        for d in cgroups:
            with open(os.path.join(d, "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))
        if sandbox:
            for s in _SANDBOX_SIGNALS:
                signal.signal(s, signal.SIG_IGN)
    return prepare


def _remove_cgroups(cgroups: list[str]) -> None:
    for d in cgroups:
        delay = 0.0005
        deadline = time.monotonic() + 2.0
        while True:  # the sandbox's last processes may take a moment to be reaped
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break  # the driver's forget() tries again
                time.sleep(delay)
                delay = min(0.02, delay * 2)


def main(argv: list[str]) -> int:
    try:
        exit_file, opts, command = _parse(argv)
    except ValueError:
        print("usage: python -I -S _runner.py EXIT_FILE [--env FILE] "
              "[--cgroup DIR]... [--sandbox] -- COMMAND...", file=sys.stderr)
        return 2
    sandbox = bool(opts["sandbox"])
    cgroups: list[str] = list(opts["cgroups"])  # type: ignore[arg-type]
    env = _load_env(opts["env"])  # type: ignore[arg-type]
    pass_fds: tuple[int, ...] = ()
    if sandbox:
        fd = _env_args_fd(env or {})
        pass_fds = (fd,)
        command = [command[0], "--args", str(fd), *command[1:]]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    try:
        child = subprocess.Popen(command, env=env, pass_fds=pass_fds,
                                 preexec_fn=_preexec(cgroups, sandbox) if (cgroups or sandbox)
                                 else None)
    except (OSError, subprocess.SubprocessError) as exc:
        why = getattr(exc, "strerror", None) or exc
        print(f"gpuplane: cannot start {command[0]!r}: {why}", file=sys.stderr, flush=True)
        code = 127
    else:
        for fd in pass_fds:
            os.close(fd)

        def forward(signum: int, _frame: object) -> None:
            try:
                if sandbox:  # bubblewrap ignores it: signal the task's processes, not ourselves
                    signal.signal(signum, signal.SIG_IGN)
                    try:
                        os.killpg(0, signum)
                    finally:
                        signal.signal(signum, forward)
                else:
                    child.send_signal(signum)
            except ProcessLookupError:
                pass

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        rc = child.wait()
        code = 128 - rc if rc < 0 else rc
    _remove_cgroups(cgroups)
    tmp = f"{exit_file}.tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{code}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, exit_file)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
