"""The task sandbox of the local driver: bubblewrap argv, task uids, GPU device nodes, cgroups.

Pure helpers plus small file-system probes; ``drivers/local.py`` decides when to use them and
``drivers/_runner.py`` (outside the sandbox) starts the argv built here. Nothing here touches
the store. The trust boundary these pieces draw is described in docs/runtime.md ("Trust
boundary: the task sandbox").

- ``bwrap_argv``: the bubblewrap command around a task: new mount, PID, IPC (and cgroup)
  namespaces; the host's file system read-only; private ``/tmp``, ``/dev/shm`` and ``/proc``;
  ``/dev`` with only the placed GPUs' nodes; gpuplane's home (and any other hidden path) under
  an empty tmpfs; the task's scratch folder the one writable place; when the server is root,
  ``setpriv`` drops to the project's uid inside the sandbox, after bubblewrap mounted (as root)
  what the task may see.
- ``task_uid``: one unprivileged uid per project (base + project id), from a configurable range.
- ``gpu_nodes``: the device nodes a placement needs (whole GPUs, control nodes, MIG caps).
- ``Cgroups``: per-task CPU and memory limits (cgroup v2 when it has the controllers, else v1).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: PATH every task gets (the spec cannot override it).
TASK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Variables of the server's environment a task inherits (plus ``LC_*``); nothing else.
ENV_ALLOW = ("LANG", "LANGUAGE", "TZ", "TERM")
ENV_ALLOW_PREFIXES = ("LC_",)

#: Device nodes a CUDA program needs besides its GPUs (bound only when present).
NVIDIA_CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
#: Signals the runner makes bubblewrap ignore (a signal to the task's process group must
#: reach the task, not kill bubblewrap, whose death would SIGKILL the task at once).
FORWARDED_SIGNALS = "TERM,INT"

DEFAULT_UID_BASE = 200_000
DEFAULT_UID_COUNT = 65_536


def find_bwrap() -> str | None:
    """The bubblewrap binary (``bwrap`` on PATH, else /usr/bin/bwrap), or None."""
    found = shutil.which("bwrap")
    if found:
        return found
    return "/usr/bin/bwrap" if os.access("/usr/bin/bwrap", os.X_OK) else None


def task_uid(project_id: int, base: int = DEFAULT_UID_BASE,
             count: int = DEFAULT_UID_COUNT) -> int:
    """The uid (and gid) tasks of project ``project_id`` (its database id, never reused) run as
    when the server is root: ``base + project_id``, one uid per project and the same on every
    restart (``base`` itself for a task of no project: ids start at 1). Raises ``ValueError`` when the id lies outside the range of ``count`` uids."""
    if not 0 <= project_id < count:
        raise ValueError(f"project id {project_id} is outside the task uid range of {count} "
                         "uids; raise GPUPLANE_TASK_UID_COUNT")
    return base + project_id


def _traversable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IXOTH)
    except OSError:
        return False


def unreachable_ancestor(path: Path) -> Path | None:
    """The highest ancestor of ``path`` that a user other than its owner cannot enter
    (no ``o+x``), or None. The sandbox puts an empty tmpfs there (the task could not read it
    anyway) so the task's scratch folder, bound below it, is reachable by its path."""
    parts = path.parts
    for i in range(2, len(parts)):
        anc = Path(*parts[:i])
        if not _traversable_by_others(anc):
            return anc
    return None


# -- GPU device nodes ----------------------------------------------------------------------
@dataclass(frozen=True)
class MigCaps:
    """A MIG instance as ``/proc/driver/nvidia/capabilities`` names it: the parent GPU's minor
    number and the GPU instance / compute instance ids."""

    gpu_minor: int
    gi: int
    ci: int


def _cap_minor(access_file: Path) -> int | None:
    """``DeviceFileMinor: N`` of a capability's ``access`` file."""
    try:
        for line in access_file.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "DeviceFileMinor":
                return int(value.strip())
    except (OSError, ValueError):
        return None
    return None


def gpu_nodes(gpu_minors: Iterable[int], migs: Iterable[MigCaps] = (), dev_root: str = "/dev",
              caps_root: str = "/proc/driver/nvidia/capabilities") -> list[tuple[str, str]]:
    """(source on the host, destination in the sandbox) of every device node the placement
    needs, only those that exist: ``nvidiaN`` per GPU (by minor number), the control nodes
    when any GPU is placed, and for MIG the capability nodes of the GPU instance and compute
    instance (``/dev/nvidia-caps/nvidia-capM``, ``M`` read from
    ``capabilities/gpuN/mig/giG[/ciC]/access``), as the NVIDIA container toolkit does."""
    root = Path(dev_root)
    minors = sorted(set(gpu_minors) | {m.gpu_minor for m in migs})
    out: list[tuple[str, str]] = []
    for minor in minors:
        out.append((str(root / f"nvidia{minor}"), f"/dev/nvidia{minor}"))
    if minors:
        out.extend((str(root / n), f"/dev/{n}") for n in NVIDIA_CONTROL_NODES)
    for m in migs:
        gi_dir = Path(caps_root) / f"gpu{m.gpu_minor}" / "mig" / f"gi{m.gi}"
        for access in (gi_dir / "access", gi_dir / f"ci{m.ci}" / "access"):
            cap = _cap_minor(access)
            if cap is not None:
                out.append((str(root / "nvidia-caps" / f"nvidia-cap{cap}"),
                            f"/dev/nvidia-caps/nvidia-cap{cap}"))
    return [(src, dst) for src, dst in out if os.path.exists(src)]


# -- bubblewrap ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SandboxLayout:
    """What one task's sandbox shows. ``scratch`` (writable) and ``control`` (read-only: the
    stop file) appear at their host paths; every path in ``hide`` is replaced by an empty
    tmpfs (gpuplane's home, a database folder elsewhere, ...); ``devices`` are (host node,
    sandbox path) pairs; ``uid``/``gid`` set: ``setpriv`` drops to them inside; ``expose``
    are folders bound read-only again where a hidden path covered them (the server's Python
    installation, so a task can run ``sys.executable``)."""

    scratch: str
    control: str
    hide: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    devices: tuple[tuple[str, str], ...] = ()
    uid: int | None = None
    gid: int | None = None
    setpriv: str = "setpriv"
    env: str = "env"


def _mask_order(hide: Iterable[str]) -> list[str]:
    """Hidden paths, parents first, without ``/`` and without paths inside another one
    (masked already)."""
    out: list[str] = []
    for p in sorted({os.path.normpath(h) for h in hide if h and os.path.normpath(h) != "/"},
                    key=lambda s: (s.count("/"), s)):
        if not any(p == m or p.startswith(m.rstrip("/") + "/") for m in out):
            out.append(p)
    return out


def _dirs_between(masks: Sequence[str], path: str) -> list[str]:
    """Ancestors of ``path`` that lie strictly inside one of ``masks`` (created 0755 so the
    task can traverse them)."""
    base = max((m for m in masks if path.startswith(m.rstrip("/") + "/")), key=len, default=None)
    if base is None:
        return []
    rel = Path(path).relative_to(base).parts[:-1]
    return [str(Path(base, *rel[:i + 1])) for i in range(len(rel))]


def bwrap_argv(bwrap: str, command: Sequence[str], layout: SandboxLayout) -> list[str]:
    """The argv that runs ``command`` in the sandbox ``layout`` describes.

    No ``--new-session``: the runner is a session leader without a controlling terminal
    (its stdin is /dev/null), so there is no terminal to inject input into, and the task
    stays in the runner's process group, which is how ``stop`` signals it. No network
    namespace: gang members rendezvous over the host's network."""
    masks = _mask_order(["/tmp", *layout.hide])
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev"]
    for src, dst in layout.devices:
        argv += ["--dev-bind", src, dst]
    argv += ["--proc", "/proc", "--perms", "1777", "--tmpfs", "/dev/shm"]
    done: list[str] = []
    for m in masks:
        for d in _dirs_between(done, m):
            argv += ["--perms", "0755", "--dir", d]
        argv += (["--perms", "1777"] if m == "/tmp" else []) + ["--tmpfs", m]
        done.append(m)
    shown = [p for p in dict.fromkeys(os.path.normpath(e) for e in layout.expose)
             if any(p.startswith(m.rstrip("/") + "/") for m in done)]
    binds = [*((p, "--ro-bind") for p in shown), (layout.scratch, "--bind"),
             (layout.control, "--ro-bind")]
    for target, how in binds:
        for d in _dirs_between(done, target):
            argv += ["--perms", "0755", "--dir", d]
        argv += [how, target, target]
    # the masks over hidden paths become read-only once what is shown below them is bound,
    # so the scratch folder (a mount of its own) stays the one writable place besides /tmp
    for m in done:
        if m != "/tmp":
            argv += ["--remount-ro", m]
    argv += ["--chdir", layout.scratch, "--unshare-pid", "--unshare-ipc",
             "--unshare-cgroup-try", "--die-with-parent", "--"]
    if layout.uid is not None:
        gid = layout.gid if layout.gid is not None else layout.uid
        argv += [layout.setpriv, f"--reuid={layout.uid}", f"--regid={gid}", "--clear-groups",
                 "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]
    # bubblewrap runs with SIGTERM/SIGINT ignored (see FORWARDED_SIGNALS); the task must not
    # inherit that: env(1) restores the default dispositions, then execs the command.
    argv += [layout.env, f"--default-signal={FORWARDED_SIGNALS}", "--", *command]
    return argv


def probe_env_default_signal(env: str = "env") -> bool:
    """True when ``env --default-signal`` works (GNU coreutils 8.31 and later)."""
    try:
        return subprocess.run([env, f"--default-signal={FORWARDED_SIGNALS}", "true"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


# -- cgroups -------------------------------------------------------------------------------
class Cgroups:
    """Per-task cgroups with CPU and memory limits, under a ``gpuplane`` group nested in the
    server's own cgroup (so tasks stay inside any limit the server itself runs under).

    ``mode``: ``"v2"`` (unified hierarchy with the cpu and memory controllers), ``"v1"``
    (separate memory and cpu hierarchies) or ``"unavailable"`` (``why`` says why; tasks then
    run without limits and the host says so in its labels). ``create`` returns the folders
    a task's processes must join (the runner writes its child's pid to ``cgroup.procs``)."""

    PERIOD_US = 100_000

    def __init__(self, mounts: str = "/proc/self/mounts", own: str = "/proc/self/cgroup",
                 enabled: bool = True) -> None:
        self.mode = "unavailable"
        self.why = "disabled"
        self.parents: dict[str, Path] = {}
        if enabled:
            try:
                self._detect(Path(mounts).read_text(), Path(own).read_text())
            except OSError as exc:
                self.why = f"cannot read the cgroup mounts ({exc.strerror or exc})"

    def _detect(self, mounts: str, own: str) -> None:
        paths: dict[str, str] = {}
        for line in own.splitlines():
            num, _, rest = line.partition(":")
            ctrls, _, path = rest.partition(":")
            for c in (ctrls.split(",") if ctrls else [""]):
                paths[c] = path or "/"
        v1: dict[str, Path] = {}
        v2: Path | None = None
        for line in mounts.splitlines():
            f = line.split()
            if len(f) < 4:
                continue
            if f[2] == "cgroup2":
                v2 = Path(f[1])
            elif f[2] == "cgroup":
                for c in ("memory", "cpu"):
                    if c in f[3].split(","):
                        v1.setdefault(c, Path(f[1]))
        errors = []
        if v2 is not None:
            ctrls = set(_read(v2 / "cgroup.controllers").split())
            if {"cpu", "memory"} <= ctrls:
                own_dir = v2 / paths.get("", "/").lstrip("/")
                parent = own_dir / "gpuplane"
                try:
                    parent.mkdir(exist_ok=True)
                    (own_dir / "cgroup.subtree_control").write_text("+cpu +memory")
                    (parent / "cgroup.subtree_control").write_text("+cpu +memory")
                    _probe(parent)
                    self.mode, self.parents = "v2", {"": parent}
                    return
                except OSError as exc:
                    errors.append(f"cgroup v2 at {own_dir}: {exc.strerror or exc}")
        if {"memory", "cpu"} <= v1.keys():
            parents = {c: v1[c] / paths.get(c, "/").lstrip("/") / "gpuplane" for c in v1}
            try:
                for p in parents.values():
                    p.mkdir(exist_ok=True)
                    _probe(p)
                self.mode, self.parents = "v1", parents
                return
            except OSError as exc:
                errors.append(f"cgroup v1: {exc.strerror or exc}")
        self.why = "; ".join(errors) or "no cgroup hierarchy with the cpu and memory controllers"

    def create(self, name: str, cpu_milli: int | None, memory_mib: int | None) -> list[str]:
        """Folders (one per hierarchy) for task ``name`` with its limits written; raises
        ``OSError`` when they cannot be written. Empty when unavailable or no limit asked."""
        if self.mode == "unavailable" or (not cpu_milli and not memory_mib):
            return []
        dirs = {c: p / name for c, p in self.parents.items()}
        for d in dirs.values():
            d.mkdir(exist_ok=True)
        mem = memory_mib * (1 << 20) if memory_mib else None
        quota = max(1000, cpu_milli * self.PERIOD_US // 1000) if cpu_milli else None
        if self.mode == "v2":
            d = dirs[""]
            if mem:
                (d / "memory.max").write_text(str(mem))
                _try_write(d / "memory.swap.max", "0")
            if quota:
                (d / "cpu.max").write_text(f"{quota} {self.PERIOD_US}")
        else:
            if mem:
                (dirs["memory"] / "memory.limit_in_bytes").write_text(str(mem))
            if quota:
                (dirs["cpu"] / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
                (dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(quota))
        return [str(d) for d in dirs.values()]

    def remove(self, name: str) -> None:
        """Remove task ``name``'s folders (best effort: a folder with processes stays)."""
        for p in self.parents.values():
            try:
                (p / name).rmdir()
            except OSError:
                pass


def _probe(parent: Path) -> None:
    """Raise ``OSError`` unless a task's cgroup can be created under ``parent``."""
    probe = parent / f"probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    probe.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _try_write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError:
        pass
