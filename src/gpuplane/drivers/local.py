"""The ``local`` driver: runs a task's command as a real process on this host.

Each task runs under a small wrapper (``drivers/_runner.py``) that is the leader
of a new process group, so cancel reaches the whole tree: SIGTERM to the group,
``grace_s`` seconds, then SIGKILL. The wrapper writes the exit code to
``$GPUPLANE_HOME/local/<task>.exit``; stdout and stderr go to
``$GPUPLANE_HOME/logs/<task>.log``. The handle records the wrapper's pid, its
kernel start time and the boot id, so after a restart of gpuplane a task whose
process is still alive is adopted and one that vanished without an exit file is
reported ``LOST`` (a reused pid is told apart by its start time).

GPU isolation: ``CUDA_VISIBLE_DEVICES`` and ``NVIDIA_VISIBLE_DEVICES`` name
exactly the placed GPUs (by UUID when NVML discovered them, else by index) or
MIG instances (by MIG UUID); a task placed on no GPU sees none. In the sandbox
its ``/dev`` also holds only the placed GPUs' device nodes.

Sandbox (``drivers/sandbox.py``, docs/runtime.md "Trust boundary"): with bubblewrap
installed every task runs in its own mount, PID and IPC namespaces, sees the system
read-only, none of ``$GPUPLANE_HOME``, and writes only to its scratch folder
``$GPUPLANE_HOME/scratch/<task>`` (working directory, ``HOME``, ``TMPDIR``); a root
server runs it as its project's uid, with CPU and memory limits in a cgroup where the
host allows. ``mode`` says what this driver does: ``bwrap``; ``unsandboxed`` (the
operator's ``--unsandboxed``: every task as the server's user, flagged in labels and
events); ``own-project-only`` (bubblewrap missing: only tasks of the installation's own
project run, unsandboxed; others are refused). The environment is built from an
allow-list in every mode. The stop file lives in a control folder gpuplane owns (bound
read-only into the sandbox), the checkpoint file in the scratch folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from gpuplane.domain.validation import env_name_problem
from gpuplane.drivers.base import (
    DriverError,
    DriverHandle,
    PlacedDevices,
    TaskObservation,
    TaskSpec,
    TaskState,
)
from gpuplane.drivers.local_devices import device_nodes, visible_devices
from gpuplane.drivers.local_inventory import LocalHostInfo
from gpuplane.drivers.logs import log_path, read_log
from gpuplane.drivers.processes import alive, boot_id, proc_start_time
from gpuplane.drivers.sandbox import (
    DEFAULT_UID_BASE,
    DEFAULT_UID_COUNT,
    ENV_ALLOW,
    ENV_ALLOW_PREFIXES,
    TASK_PATH,
    Cgroups,
    SandboxLayout,
    bwrap_argv,
    find_bwrap,
    probe_env_default_signal,
    task_uid,
    unreachable_ancestor,
)

_RUNNER = Path(__file__).resolve().with_name("_runner.py")

#: What the local driver does about isolation (host label ``gpuplane.io/sandbox``).
MODE_BWRAP = "bwrap"
MODE_UNSANDBOXED = "unsandboxed"
MODE_OWN_PROJECT_ONLY = "own-project-only"
LABEL_SANDBOX = "gpuplane.io/sandbox"
LABEL_CGROUPS = "gpuplane.io/cgroups"
#: The installation's own project: the only one whose tasks run without bubblewrap.
OWN_PROJECT = "default"
CHECKPOINT_NAME = ".gpuplane-checkpoint"


class LocalDriver:
    """Real processes on this host. ``host`` is the name the local host is
    registered under; ``home`` is ``$GPUPLANE_HOME``.

    Sandbox options: ``unsandboxed`` (run every task as the server's user, without
    bubblewrap); ``bwrap`` (path of bubblewrap; ``"auto"``: find it; ``None``: act as if it
    were missing); ``own_project`` (the project that may run without bubblewrap);
    ``uid_base``/``uid_count`` (the range project uids are hashed into when the server is
    root); ``hide`` (more paths the sandbox hides, e.g. the SQLite database's folder);
    ``dev_root`` and ``caps_root`` (where the GPU device nodes and NVIDIA capability files
    are: tests point them at fakes); ``cgroups`` (False: never set CPU/memory limits, or a
    ``Cgroups`` to use)."""

    kind: ClassVar[str] = "local"

    def __init__(self, home: Path | str, host: str, inventory: LocalHostInfo | None = None,
                 master_addr: str = "127.0.0.1", *, unsandboxed: bool = False,
                 bwrap: str | None = "auto", own_project: str = OWN_PROJECT,
                 uid_base: int = DEFAULT_UID_BASE, uid_count: int = DEFAULT_UID_COUNT,
                 hide: Iterable[Path | str] = (), dev_root: str = "/dev",
                 caps_root: str = "/proc/driver/nvidia/capabilities",
                 cgroups: bool | Cgroups = True) -> None:
        self.home = Path(home).resolve()  # every path handed to a task must be absolute
        self.host = host
        self.inventory = inventory
        self.master_addr = master_addr
        self.log_dir = self.home / "logs"
        self.state_dir = self.home / "local"
        self.scratch_dir = self.home / "scratch"
        for d in (self.log_dir, self.state_dir, self.scratch_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.scratch_dir, 0o700)
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._adopted: set[str] = set()
        self._lock = threading.Lock()
        self._boot = boot_id()
        self.own_project = own_project
        self.uid_base, self.uid_count = uid_base, uid_count
        self.hide = tuple(str(Path(p).resolve()) for p in hide)
        self.dev_root, self.caps_root = dev_root, caps_root
        self.notes: list[str] = []
        self.bwrap = find_bwrap() if bwrap == "auto" else bwrap
        self.as_root = os.geteuid() == 0
        self._setpriv = shutil.which("setpriv") or "setpriv"
        self._env = shutil.which("env") or "/usr/bin/env"
        if unsandboxed:
            self.mode = MODE_UNSANDBOXED
            self.notes.append("tasks run unsandboxed, as the server's user (--unsandboxed)")
        elif self.bwrap is None:
            self.mode = MODE_OWN_PROJECT_ONLY
            self.notes.append("bubblewrap (bwrap) is not installed: only tasks of project "
                              f"{own_project!r} run (unsandboxed); install the Debian package "
                              "'bubblewrap' to run every project's tasks in a sandbox")
        elif not probe_env_default_signal(self._env) or (self.as_root
                                                           and not shutil.which("setpriv")):
            self.mode = MODE_OWN_PROJECT_ONLY
            self.notes.append("the sandbox needs env --default-signal (GNU coreutils >= 8.31) "
                              "and setpriv (util-linux); only tasks of project "
                              f"{own_project!r} run (unsandboxed)")
        else:
            self.mode = MODE_BWRAP
        self.cgroups = cgroups if isinstance(cgroups, Cgroups) else Cgroups(enabled=cgroups)
        if self.cgroups.mode == "unavailable":
            self.notes.append(f"no CPU/memory limits for tasks: {self.cgroups.why}")

    def labels(self) -> dict[str, str]:
        """What this driver enforces, as host labels (``get hosts``, ``describe host``)."""
        return {LABEL_SANDBOX: self.mode, LABEL_CGROUPS: self.cgroups.mode}

    # -- files -------------------------------------------------------------
    def _exit_file(self, task_id: str) -> Path:
        return log_path(self.state_dir, task_id).with_suffix(".exit")

    def _handle_file(self, task_id: str) -> Path:
        return log_path(self.state_dir, task_id).with_suffix(".json")

    def _recorded(self, task_id: str) -> DriverHandle | None:
        """The handle of an earlier start of ``task_id`` (a start whose handle the loop may not
        have stored before a crash), if it is still alive or left an exit code."""
        try:
            h = DriverHandle.from_dict(json.loads(self._handle_file(task_id).read_text()))
        except (OSError, ValueError, KeyError):
            return None
        return h if self._is_alive(h) or self._exit_code(h) is not None else None

    def _env_file(self, task_id: str) -> Path:
        return log_path(self.state_dir, task_id).with_suffix(".env")

    def scratch(self, task_id: str) -> Path:
        """The task's private writable folder: working directory, ``HOME``, ``TMPDIR``."""
        return log_path(self.scratch_dir, task_id).with_suffix("")

    def _control_dir(self, task_id: str) -> Path:
        """Folder gpuplane owns holding the stop file; read-only inside the sandbox (a file
        gpuplane writes must not lie in a folder the task owns: it could plant a link)."""
        return log_path(self.state_dir, task_id).with_suffix(".ctl")

    def _stopped_file(self, task_id: str) -> Path:
        """Written by ``stop`` before it signals: JSON ``signalled_at``, ``grace_s``,
        ``deadline``; ``forced``/``killed_at`` are added before a SIGKILL at the deadline.
        The task can read it (``$GPUPLANE_STOP_FILE``) to learn how long it has left."""
        return self._control_dir(task_id) / "stop"

    def _checkpoint_file(self, task_id: str) -> Path:
        """The task touches it (``$GPUPLANE_CHECKPOINT_FILE``) whenever it has saved a
        checkpoint; its modification time is the task's last checkpoint."""
        return self.scratch(task_id) / CHECKPOINT_NAME

    def _write_stop(self, task_id: str, **values: Any) -> None:
        path = self._stopped_file(task_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o755)  # the task reads it whatever the server's umask
        tmp = path.with_name("stop.tmp")
        tmp.write_text(json.dumps(values))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def _read_stop(self, task_id: str) -> dict[str, Any]:
        try:
            raw = json.loads(self._stopped_file(task_id).read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return raw if isinstance(raw, dict) else {}

    def _mtime(self, path: Path) -> float | None:
        try:
            return os.lstat(path).st_mtime  # never follow a link the task planted
        except OSError:
            return None

    # -- environment -------------------------------------------------------
    def _gpus(self) -> dict[int, Any]:
        return {g.index: g for g in (self.inventory.gpus if self.inventory else ())}

    def task_env(self, task: TaskSpec, dev: PlacedDevices) -> dict[str, str]:
        """The environment a task runs with (exposed for tests and ``describe``): the
        server's ``LANG``, ``LC_*``, ``TZ``, ``TERM`` only, a fixed ``PATH``, ``HOME`` and
        ``TMPDIR`` in the scratch folder, the spec's ``env`` without the keys refused at
        submit time (``LD_*``, ``GPUPLANE_*``, ``NVIDIA_*``, ``CUDA_VISIBLE_DEVICES``,
        ``PATH``: dropped here too), then gpuplane's own variables."""
        env = {k: v for k, v in os.environ.items()
               if k in ENV_ALLOW or k.startswith(ENV_ALLOW_PREFIXES)}
        scratch = str(self.scratch(task.task_id))
        env.update(PATH=TASK_PATH, HOME=scratch, TMPDIR=scratch)
        # names refused at submit time (domain/validation.py) are dropped here too, for a spec
        # stored before that rule
        env.update({k: v for k, v in task.env.items() if env_name_problem(k) is None})
        visible = visible_devices(self._gpus(), dev)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(visible)
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(visible) if visible else "none"
        env["GPUPLANE_WORKLOAD"] = task.workload
        env["GPUPLANE_TASK_ID"] = task.task_id
        env["GPUPLANE_TASK_INDEX"] = str(task.index)
        env["GPUPLANE_WORLD_SIZE"] = str(task.world_size)
        env["GPUPLANE_HOST"] = dev.host
        env["GPUPLANE_GPU_MILLI"] = str(dev.gpu_milli if visible else 0)
        env["GPUPLANE_CHECKPOINT_FILE"] = str(self._checkpoint_file(task.task_id))
        env["GPUPLANE_STOP_FILE"] = str(self._stopped_file(task.task_id))
        if task.world_size > 1 or task.master_addr:
            env["GPUPLANE_MASTER_ADDR"] = task.master_addr or self.master_addr
            env["GPUPLANE_MASTER_PORT"] = str(task.master_port or 29500)
        return env

    # -- sandbox -----------------------------------------------------------
    def _check_allowed(self, task: TaskSpec) -> None:
        if self.mode == MODE_OWN_PROJECT_ONLY and task.project != self.own_project:
            raise DriverError(
                f"host {self.host} cannot isolate tasks (bubblewrap is not installed), so it "
                f"runs only tasks of project {self.own_project!r}, not of "
                f"{task.project or 'an unnamed project'!r}; install the Debian package "
                "'bubblewrap', or start gpuplane with --unsandboxed to run every project's "
                "tasks without isolation")

    def task_uid(self, task: TaskSpec) -> int | None:
        """The uid the task runs as: its project's when the server is root and sandboxes
        tasks; ``None``: the server's own."""
        if self.mode != MODE_BWRAP or not self.as_root:
            return None
        try:
            return task_uid(task.project_id, self.uid_base, self.uid_count)
        except ValueError as exc:
            raise DriverError(f"task {task.task_id}: {exc}") from exc

    def _device_nodes(self, dev: PlacedDevices) -> list[tuple[str, str]]:
        return device_nodes(self._gpus(), dev, self.dev_root, self.caps_root)

    def _command(self, task: TaskSpec, dev: PlacedDevices, uid: int | None) -> list[str]:
        if self.mode != MODE_BWRAP:
            return list(task.command)
        hide = [str(self.home), *self.hide]
        expose = [p for p in dict.fromkeys((sys.base_prefix, sys.prefix))
                  if not Path(p).is_relative_to(self.home)]
        if uid is not None:
            # A folder the task's uid cannot enter above its scratch folder, or above the
            # server's Python, becomes an empty tmpfs (the task could not read it anyway),
            # so the scratch folder and the interpreter bound below it are reachable.
            for path in (self.home, *map(Path, expose)):
                blocked = unreachable_ancestor(path)
                if blocked is not None:
                    hide.append(str(blocked))
        layout = SandboxLayout(
            scratch=str(self.scratch(task.task_id)),
            control=str(self._control_dir(task.task_id)), hide=tuple(hide),
            devices=tuple(self._device_nodes(dev)), uid=uid, gid=uid,
            expose=tuple(expose),
            setpriv=self._setpriv, env=self._env)
        return bwrap_argv(str(self.bwrap), task.command, layout)

    @staticmethod
    def _fresh_dir(path: Path, mode: int, uid: int | None = None) -> None:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        path.mkdir(mode=mode)
        os.chmod(path, mode)
        if uid is not None:
            os.chown(path, uid, uid)

    @staticmethod
    def _runner_env() -> dict[str, str]:
        """The runner's own environment: the server's PATH only (it runs with the server's
        privileges, so nothing of the task's environment; its command gets that)."""
        return {"PATH": os.environ.get("PATH", TASK_PATH)}

    # -- Driver ------------------------------------------------------------
    def start(self, task: TaskSpec, placement: Any) -> DriverHandle:
        dev = placement if isinstance(placement, PlacedDevices) else PlacedDevices.from_placement(placement)
        if not task.command:
            raise DriverError(f"task {task.task_id} has no command to run")
        earlier = self._recorded(task.task_id)
        if earlier is not None:
            return earlier
        self._check_allowed(task)
        env = self.task_env(task, dev)
        tid = task.task_id
        exit_file = self._exit_file(tid)
        exit_file.unlink(missing_ok=True)
        uid = self.task_uid(task)
        scratch = self.scratch(tid)
        logf = log_path(self.log_dir, tid)
        try:
            self._fresh_dir(scratch, 0o700, uid)
            self._fresh_dir(self._control_dir(tid), 0o755)
            env_file = self._env_file(tid)
            fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(env, fh)
            cgroups = self.cgroups.create(scratch.name, task.cpu_milli, task.memory_mib)
        except OSError as exc:
            raise DriverError(f"cannot prepare task {tid}: {exc.strerror or exc} "
                              f"({exc.filename or ''})") from exc
        # the runner uses the standard library only: run its file isolated and without
        # site-packages (no task or server variable can steer it; starts ~2x faster)
        argv = [sys.executable, "-I", "-S", str(_RUNNER), str(exit_file),
                "--env", str(env_file)]
        for d in cgroups:
            argv += ["--cgroup", d]
        if self.mode == MODE_BWRAP:
            argv.append("--sandbox")
        argv += ["--", *self._command(task, dev, uid)]
        cwd = task.working_dir if task.working_dir and self.mode != MODE_BWRAP else scratch
        try:
            with open(logf, "ab") as out:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, env=self._runner_env(),
                                        cwd=cwd, start_new_session=True)
        except OSError as exc:
            raise DriverError(f"cannot start task {tid}: {exc.strerror or exc}") from exc
        with self._lock:
            self._children[task.task_id] = proc
        handle = DriverHandle(driver=self.kind, task_id=task.task_id, host=dev.host,
                              data={"pid": proc.pid, "start_time": proc_start_time(proc.pid),
                                    "boot_id": self._boot, "log": str(logf),
                                    "exit_file": str(exit_file),
                                    "sandbox": "bwrap" if self.mode == MODE_BWRAP else "none",
                                    "uid": uid if uid is not None else os.geteuid(),
                                    "cgroups": cgroups})
        tmp = self._handle_file(task.task_id).with_suffix(".tmp")
        tmp.write_text(json.dumps(handle.to_dict()))
        os.replace(tmp, self._handle_file(task.task_id))
        return handle

    def stop(self, handle: DriverHandle, grace_s: float = 10.0) -> None:
        pid = int(handle.data.get("pid", 0) or 0)
        if pid <= 0:
            return
        if self._stopped_file(handle.task_id).exists():
            signalled = self._read_stop(handle.task_id)   # a stop already under way (restart)
        else:
            at = time.time()
            signalled = {"signalled_at": at, "grace_s": max(0.0, grace_s),
                         "deadline": at + max(0.0, grace_s), "forced": False}
            self._write_stop(handle.task_id, **signalled)
        if not self._is_alive(handle):
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        remaining = float(signalled.get("deadline", time.time() + grace_s)) - time.time()
        deadline = time.monotonic() + max(0.0, min(remaining, grace_s))
        while time.monotonic() < deadline:
            if not self._is_alive(handle):
                return
            time.sleep(0.05)
        if not self._is_alive(handle):
            return
        # recorded before the kill, so an observer never sees the end without the timeout
        self._write_stop(handle.task_id, **{**signalled, "forced": True, "killed_at": time.time()})
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._reap(handle.task_id, wait=True)

    def observe(self, handles: Sequence[DriverHandle]) -> list[TaskObservation]:
        return [self._observe_one(h) for h in handles]

    def read_logs(self, handle: DriverHandle, offset: int = 0,
                  limit: int = 1 << 20) -> tuple[bytes, int]:
        return read_log(handle.data.get("log") or log_path(self.log_dir, handle.task_id),
                        offset, limit)

    def ended(self, handle: DriverHandle) -> bool:
        """True once the task's process has exited (no side effects; for log readers)."""
        if not handle.data.get("pid"):
            return True
        return self._exit_code(handle) is not None or not self._is_alive(handle)

    # -- internals ---------------------------------------------------------
    def _reap(self, task_id: str, wait: bool = False) -> int | None:
        with self._lock:
            proc = self._children.get(task_id)
        if proc is None:
            return None
        try:
            rc = proc.wait(timeout=5) if wait else proc.poll()
        except subprocess.TimeoutExpired:
            rc = None
        if rc is not None:
            with self._lock:
                self._children.pop(task_id, None)
        return rc

    def _is_alive(self, handle: DriverHandle) -> bool:
        with self._lock:
            proc = self._children.get(handle.task_id)
        if proc is not None:
            return proc.poll() is None
        if handle.data.get("boot_id") and handle.data.get("boot_id") != self._boot:
            return False
        st = handle.data.get("start_time")
        return alive(int(handle.data["pid"]), int(st) if st is not None else None)

    def _exit_code(self, handle: DriverHandle) -> int | None:
        path = Path(handle.data.get("exit_file") or self._exit_file(handle.task_id))
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _observe_one(self, handle: DriverHandle) -> TaskObservation:
        tid = handle.task_id
        if not handle.data.get("pid"):
            return TaskObservation(tid, TaskState.LOST, message="no process was recorded for it")
        mine = tid in self._children
        wrapper_rc = self._reap(tid) if mine else None
        code = self._exit_code(handle)  # written last thing before the wrapper exits
        if code is None and wrapper_rc is None and self._is_alive(handle):
            if not mine and tid not in self._adopted:
                self._adopted.add(tid)
                return TaskObservation(tid, TaskState.RUNNING, adopted=True,
                                       message=f"adopted process {handle.data['pid']} after restart")
            return TaskObservation(tid, TaskState.RUNNING,
                                   checkpointed_at=self._mtime(self._checkpoint_file(tid)))
        self._adopted.discard(tid)
        stopped = self._stopped_file(tid).exists()
        if code is None and wrapper_rc is not None:
            code = 128 - wrapper_rc if wrapper_rc < 0 else wrapper_rc
        if stopped:
            info = self._read_stop(tid)
            forced = bool(info.get("forced", False))
            ended = info.get("killed_at") if forced else self._mtime(self._exit_file(tid))
            return TaskObservation(
                tid, TaskState.CANCELLED, exit_code=code,
                message=("killed after its grace period" if forced else "stopped"),
                forced=forced, signalled_at=info.get("signalled_at"), ended_at=ended,
                checkpointed_at=self._mtime(self._checkpoint_file(tid)))
        if code is None:
            return TaskObservation(tid, TaskState.LOST,
                                   message=f"process {handle.data['pid']} is gone and recorded "
                                           "no exit status")
        if code == 0:
            return TaskObservation(tid, TaskState.SUCCEEDED, exit_code=0, message="exited with code 0")
        return TaskObservation(tid, TaskState.FAILED, exit_code=code,
                               message=f"exited with code {code}")

    def forget(self, handles: Sequence[DriverHandle]) -> None:
        """Drop the bookkeeping files of tasks whose end the store has recorded."""
        for h in handles:
            self._reap(h.task_id, wait=True)
            self._exit_file(h.task_id).unlink(missing_ok=True)
            self._env_file(h.task_id).unlink(missing_ok=True)
            self._handle_file(h.task_id).unlink(missing_ok=True)
            shutil.rmtree(self._control_dir(h.task_id), ignore_errors=True)
            shutil.rmtree(self.scratch(h.task_id), ignore_errors=True)  # symlink-safe
            self.cgroups.remove(self.scratch(h.task_id).name)

