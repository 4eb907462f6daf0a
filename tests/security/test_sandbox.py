"""Red team: escapes from the local driver's sandbox, tried for real (bubblewrap on this host).

An attacker task of project ``proj-beta`` runs next to a victim task of ``proj-alpha`` on one
``LocalDriver`` whose home holds the admin token and the database (both containing the planted
``SECRET``), with the secret also in the server's environment and a fake ``/dev`` holding two
GPUs. Every attempt must fail with "No such file or directory" / "Permission denied" / "No such
process" / "Read-only file system" and never print the secret. Attempts are counted by kind
(``sandbox.*``) into the suite's ``ATTEMPTS``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpuplane.drivers.base import DriverError, PlacedDevices, TaskSpec, TaskState
from gpuplane.drivers.local import LocalDriver
from gpuplane.drivers.local_inventory import LocalGpu, LocalHostInfo, LocalMig
from gpuplane.drivers.sandbox import SandboxLayout, bwrap_argv, find_bwrap, gpu_nodes, task_uid
from drivers.conftest import wait_until
from security.conftest import ATTEMPTS, SECRET, SECRET_ENV, assert_no_leak

BWRAP = find_bwrap()
needs_bwrap = pytest.mark.skipif(BWRAP is None, reason="bubblewrap (bwrap) is not installed: "
                                 "`make test` installs the Debian package 'bubblewrap'")
REFUSED = ("No such file or directory", "Permission denied", "Read-only file system",
           "No such process", "Operation not permitted", "Can't open", "cannot create",
           "can't create", "Directory nonexistent")


#: Database ids of the projects the tests run tasks for (the uid is base + id).
PROJECT_IDS = {"default": 1, "proj-alpha": 2, "proj-beta": 3}


def attempt(kind: str) -> None:
    ATTEMPTS[f"sandbox.{kind}"] += 1


class Box:
    """A driver with planted secrets, a victim task and helpers to run attacker commands."""

    def __init__(self, tmp_path: Path, **kw) -> None:
        self.home = tmp_path / "home"
        self.home.mkdir()
        (self.home / "admin-token").write_text(SECRET + "\n")
        (self.home / "gpuplane.db").write_text(f"SQLite format 3 ... {SECRET}")
        self.db_dir = tmp_path / "elsewhere"  # a database outside home, hidden too
        self.db_dir.mkdir()
        (self.db_dir / "gpuplane.db").write_text(SECRET)
        self.dev = tmp_path / "dev"  # fake device nodes
        self.dev.mkdir()
        for n in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
            (self.dev / n).write_text(f"fake {n}\n")
        inv = LocalHostInfo("h1", 4000, 8192, tuple(
            LocalGpu(i, "L40S-48GB", 49152, uuid=f"GPU-{i}") for i in range(2)), "nvml")
        self.driver = LocalDriver(self.home, host="h1", inventory=inv, dev_root=str(self.dev),
                                  hide=[self.db_dir], **kw)
        self.n = 0

    def start(self, script: str, project: str = "proj-beta", gpus: tuple[int, ...] = (),
              env: dict[str, str] | None = None, **kw):
        self.n += 1
        spec = TaskSpec(task_id=f"{project}.{self.n}", workload="w", project=project,
                        project_id=PROJECT_IDS[project],
                        command=("sh", "-c", script), env=env or {}, **kw)
        return self.driver.start(spec, PlacedDevices(host="h1", gpu_indices=gpus))

    def run(self, script: str, **kw) -> tuple[object, str]:
        h = self.start(script, **kw)
        assert wait_until(lambda: self.driver.observe([h])[0].state.terminal), script
        obs = self.driver.observe([h])[0]
        out = self.driver.read_logs(h)[0].decode(errors="replace")
        assert_no_leak(out)
        return obs, out

    def victim(self):
        h = self.start("echo victim-secret-$((6*7)) > mine; echo victim log line; sleep 60",
                       project="proj-alpha")
        assert wait_until(lambda: (self.driver.scratch(h.task_id) / "mine").exists())
        return h


@pytest.fixture
def box(tmp_path, monkeypatch):
    if BWRAP is None:
        pytest.skip("bubblewrap (bwrap) is not installed")
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # not a GPUPLANE_ name: allow-list
    b = Box(tmp_path)
    assert b.driver.mode == "bwrap", b.driver.notes
    yield b
    for h in list(b.driver._children):
        from gpuplane.drivers.base import DriverHandle
        b.driver.stop(DriverHandle("local", h, "h1", {"pid": b.driver._children[h].pid}), 0)


def refused(out: str) -> bool:
    return any(r in out for r in REFUSED)


@needs_bwrap
def test_the_admin_token_and_the_databases_are_not_there(box):
    for kind, path in (("read_admin_token", box.home / "admin-token"),
                       ("read_database", box.home / "gpuplane.db"),
                       ("read_database", box.db_dir / "gpuplane.db")):
        attempt(kind)
        obs, out = box.run(f"cat {path}")
        assert obs.state == TaskState.FAILED and refused(out), out
    attempt("list_home")
    _, out = box.run(f"ls -a {box.home}; ls -a {box.db_dir}; ls {box.home}/logs")
    assert "admin-token" not in out and "gpuplane.db" not in out, out


@needs_bwrap
def test_another_tasks_folder_log_and_processes_are_out_of_reach(box):
    v = box.victim()
    scratch, log = box.driver.scratch(v.task_id), v.data["log"]
    attempt("read_other_task_folder")
    _, out = box.run(f"cat {scratch}/mine; ls {scratch}; ls {box.home}/scratch")
    assert "victim-secret-42" not in out and refused(out), out
    attempt("read_other_task_log")
    _, out = box.run(f"cat {log}")
    assert "victim log line" not in out and refused(out), out
    attempt("signal_other_task")
    pid = v.data["pid"]
    _, out = box.run(f"kill -9 {pid}; kill -9 -{pid}; kill -KILL -1; echo done")
    assert "done" in out
    assert box.driver.observe([v])[0].state == TaskState.RUNNING  # the victim lives on
    assert (scratch / "mine").read_text().strip() == "victim-secret-42"


@needs_bwrap
def test_proc_shows_only_the_tasks_own_processes(box):
    attempt("read_server_proc")
    server = os.getpid()
    obs, out = box.run(f"ls /proc | grep -E '^[0-9]+$' | wc -l; cat /proc/{server}/environ; "
                       f"cat /proc/{server}/cmdline; cat /proc/1/environ | tr '\\0' '\\n'")
    assert refused(out), out
    assert int(out.split()[0]) <= 5  # bwrap's init, sh, ls, grep, wc
    assert "pytest" not in out


@needs_bwrap
def test_the_servers_environment_is_not_inherited(box):
    attempt("read_server_env")
    _, out = box.run("env; cat /proc/self/environ")
    assert "AWS_SECRET_ACCESS_KEY" not in out and SECRET_ENV not in out


@needs_bwrap
def test_ld_preload_and_path_from_the_spec_are_not_honoured(box):
    attempt("spec_ld_preload_path")
    _, out = box.run('echo "preload=[$LD_PRELOAD] path=[$PATH] gp=[$GPUPLANE_TOKEN]"',
                     env={"LD_PRELOAD": "/tmp/evil.so", "PATH": "/evil", "GPUPLANE_TOKEN": "x",
                          "NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "0,1",
                          "MY_SETTING": "kept"})
    assert "preload=[]" in out and "gp=[]" in out
    assert "path=[/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin]" in out
    _, out = box.run('echo "$NVIDIA_VISIBLE_DEVICES|$CUDA_VISIBLE_DEVICES|$MY_SETTING"',
                     env={"NVIDIA_VISIBLE_DEVICES": "all", "MY_SETTING": "kept"})
    assert out.strip() == "none||kept"


@needs_bwrap
def test_only_the_placed_gpus_device_nodes_are_visible(box):
    attempt("see_unplaced_gpu")
    obs, out = box.run("ls /dev; cat /dev/nvidia1; cat /dev/nvidia0", gpus=(0,))
    listed = out.split()
    assert "nvidia0" in listed and "nvidiactl" in listed and "nvidia-uvm" in listed
    assert "nvidia1" not in listed and "fake nvidia0" in out and refused(out), out
    attempt("see_unplaced_gpu")
    _, out = box.run("ls /dev")
    assert not [n for n in out.split() if n.startswith("nvidia")], out


@needs_bwrap
def test_nothing_outside_the_scratch_folder_is_writable(box):
    repo = Path.cwd()
    targets = ["/", "/usr", "/etc", str(box.home), str(box.home / "logs"), str(repo),
               str(box.db_dir), str(box.dev)]
    for t in targets:
        attempt("write_outside_scratch")
        obs, out = box.run(f"echo pwned > {t}/pwned-by-task")
        assert obs.state == TaskState.FAILED and refused(out), (t, out)
        assert not Path(t, "pwned-by-task").exists()
    obs, out = box.run("echo fine > here && cat here && echo t > $TMPDIR/x && echo p > /tmp/p "
                       "&& pwd")
    assert obs.state == TaskState.SUCCEEDED and "fine" in out
    assert out.split()[-1] == str(box.driver.scratch(f"proj-beta.{box.n}"))
    assert not Path("/tmp/p").exists() or Path("/tmp/p").read_text() != "p\n"


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="tasks keep the server's uid when it is not root")
def test_a_root_server_runs_each_project_as_its_own_unprivileged_uid(box):
    attempt("run_as_root")
    _, out = box.run("id -u; id -g; id -G")
    uid = task_uid(PROJECT_IDS["proj-beta"])
    assert out.split() == [str(uid)] * 3
    assert uid != task_uid(PROJECT_IDS["proj-alpha"]) and uid >= 200_000
    h = box.start("sleep 30")
    st = box.driver.scratch(h.task_id).stat()
    assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o700)
    box.driver.stop(h, grace_s=0)


@needs_bwrap
def test_sigterm_reaches_the_sandboxed_command_which_may_checkpoint_and_exit(box):
    script = ('trap \'cat "$GPUPLANE_STOP_FILE"; touch "$GPUPLANE_CHECKPOINT_FILE"; '
              'echo bye; exit 0\' TERM; echo ready; while :; do sleep 0.05; done')
    h = box.start(script)
    assert wait_until(lambda: b"ready" in box.driver.read_logs(h)[0])
    box.driver.stop(h, grace_s=10)
    assert wait_until(lambda: box.driver.observe([h])[0].state.terminal)
    obs = box.driver.observe([h])[0]
    out = box.driver.read_logs(h)[0].decode()
    assert obs.state == TaskState.CANCELLED and obs.forced is False, (obs, out)
    assert "bye" in out and '"grace_s": 10' in out and obs.checkpointed_at is not None


@needs_bwrap
def test_cpu_and_memory_limits_are_set_through_cgroups(box):
    if box.driver.cgroups.mode == "unavailable":
        pytest.skip(f"cgroups unavailable here: {box.driver.cgroups.why}")
    h = box.start("sleep 30", cpu_milli=500, memory_mib=64)
    dirs = h.data["cgroups"]
    assert dirs
    if box.driver.cgroups.mode == "v1":
        mem = next(d for d in dirs if "memory" in d)
        cpu = next(d for d in dirs if "/cpu" in d)
        assert Path(mem, "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        assert Path(cpu, "cpu.cfs_quota_us").read_text().strip() == "50000"
        procs_file = Path(mem, "cgroup.procs")
    else:
        assert Path(dirs[0], "memory.max").read_text().strip() == str(64 << 20)
        procs_file = Path(dirs[0], "cgroup.procs")
    # bubblewrap and the task join it (the runner does not)
    assert wait_until(lambda: len(procs_file.read_text().split()) >= 2)
    procs = procs_file.read_text().split()
    assert str(h.data["pid"]) not in procs
    box.driver.stop(h, grace_s=0)  # killed with its runner: forget removes the cgroups
    assert box.driver.observe([h])[0].state == TaskState.CANCELLED
    box.driver.forget([h])
    assert wait_until(lambda: all(not Path(d).exists() for d in dirs))
    attempt("exceed_memory_limit")
    h = box.start("python3 -c 'b = bytearray(512 << 20); print(len(b))'", memory_mib=64)
    assert wait_until(lambda: box.driver.observe([h])[0].state.terminal)
    obs = box.driver.observe([h])[0]
    assert obs.state == TaskState.FAILED and str(512 << 20).encode() not in \
        box.driver.read_logs(h)[0]
    # a task that ends by itself: the runner removes its cgroups
    assert wait_until(lambda: all(not Path(d).exists() for d in h.data["cgroups"]))


def test_without_bubblewrap_only_the_installations_own_project_runs(tmp_path):
    d = LocalDriver(tmp_path / "home", host="h1", bwrap=None)
    assert d.mode == "own-project-only" and d.labels()["gpuplane.io/sandbox"] == d.mode
    attempt("run_without_sandbox")
    with pytest.raises(DriverError, match="bubblewrap"):
        d.start(TaskSpec(task_id="t1", workload="w", project="proj-beta", command=("true",)),
                PlacedDevices(host="h1"))
    h = d.start(TaskSpec(task_id="t2", workload="w", project="default", command=("true",)),
                PlacedDevices(host="h1"))
    assert h.data["sandbox"] == "none"
    assert wait_until(lambda: d.observe([h])[0].state == TaskState.SUCCEEDED)
    u = LocalDriver(tmp_path / "home2", host="h1", bwrap=None, unsandboxed=True)
    assert u.labels()["gpuplane.io/sandbox"] == "unsandboxed"
    h = u.start(TaskSpec(task_id="t3", workload="w", project="proj-beta", command=("true",)),
                PlacedDevices(host="h1"))
    assert h.data["sandbox"] == "none"
    assert wait_until(lambda: u.observe([h])[0].state == TaskState.SUCCEEDED)


def test_the_bwrap_command_hides_home_and_binds_only_what_the_task_needs():
    layout = SandboxLayout(scratch="/srv/gp/scratch/t1", control="/srv/gp/local/t1.ctl",
                           hide=("/srv/gp", "/srv/gp/logs", "/var/db"),
                           devices=(("/dev/nvidia0", "/dev/nvidia0"),), uid=200123)
    argv = bwrap_argv("bwrap", ["python3", "train.py"], layout)
    s = " ".join(argv)
    assert "--tmpfs /srv/gp " in s and "--tmpfs /srv/gp/logs" not in s  # inside a mask already
    assert "--tmpfs /var/db" in s and "--perms 1777 --tmpfs /tmp" in s
    assert s.index("--tmpfs /srv/gp ") < s.index("--bind /srv/gp/scratch/t1 /srv/gp/scratch/t1")
    assert "--ro-bind /srv/gp/local/t1.ctl /srv/gp/local/t1.ctl" in s
    assert "--perms 0755 --dir /srv/gp/scratch" in s
    assert "--dev-bind /dev/nvidia0 /dev/nvidia0" in s
    assert "--reuid=200123" in s and "--no-new-privs" in s and "--clear-groups" in s
    assert "--new-session" not in s and "--unshare-pid" in s and "--unshare-ipc" in s
    assert argv[-2:] == ["python3", "train.py"]


def test_mig_placements_get_their_instances_capability_nodes(tmp_path):
    dev = tmp_path / "dev"
    (dev / "nvidia-caps").mkdir(parents=True)
    for n in ("nvidia0", "nvidiactl", "nvidia-caps/nvidia-cap30", "nvidia-caps/nvidia-cap31",
              "nvidia-caps/nvidia-cap39"):
        (dev / n).write_text("")
    caps = tmp_path / "caps"
    for rel, minor in (("gpu0/mig/gi3/access", 30), ("gpu0/mig/gi3/ci0/access", 31),
                       ("gpu0/mig/gi4/access", 39)):
        (caps / rel).parent.mkdir(parents=True, exist_ok=True)
        (caps / rel).write_text(f"DeviceFileMinor: {minor}\nDeviceFileMode: 292\n")
    inv = LocalHostInfo("h1", 4000, 8192, (LocalGpu(0, "A100-40GB", 40960, uuid="GPU-0", mig=(
        LocalMig("MIG-a", "3g.20gb", 0, gi=3, ci=0), LocalMig("MIG-b", "3g.20gb", 4, gi=4,
                                                              ci=0))),), "nvml")
    d = LocalDriver(tmp_path / "home", host="h1", inventory=inv, dev_root=str(dev),
                    caps_root=str(caps), cgroups=False)
    nodes = d._device_nodes(PlacedDevices(host="h1", gpu_indices=(0,), mig=((0, "3g.20gb", 0),)))
    assert [dst for _, dst in nodes] == ["/dev/nvidia0", "/dev/nvidiactl",
                                         "/dev/nvidia-caps/nvidia-cap30",
                                         "/dev/nvidia-caps/nvidia-cap31"]
    assert gpu_nodes([], dev_root=str(dev)) == []  # no GPU placed: not even the control nodes


def test_cgroup_v2_limits_are_written_under_the_servers_own_cgroup(tmp_path):
    from gpuplane.drivers.sandbox import Cgroups

    root = tmp_path / "cg"
    (root / "srv").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    mounts = tmp_path / "mounts"
    mounts.write_text(f"cgroup2 {root} cgroup2 rw,nosuid 0 0\n")
    own = tmp_path / "own"
    own.write_text("0::/srv\n")
    cg = Cgroups(mounts=str(mounts), own=str(own))
    assert cg.mode == "v2", cg.why
    assert (root / "srv" / "cgroup.subtree_control").read_text() == "+cpu +memory"
    (d,) = cg.create("t1", cpu_milli=1500, memory_mib=256)
    assert Path(d) == root / "srv" / "gpuplane" / "t1"
    assert Path(d, "cpu.max").read_text() == "150000 100000"
    assert Path(d, "memory.max").read_text() == str(256 << 20)
    assert cg.create("t2", None, None) == []  # nothing asked: no cgroup
    bare = tmp_path / "bare"
    bare.write_text("proc /proc proc rw 0 0\n")
    assert Cgroups(mounts=str(bare), own=str(own)).mode == "unavailable"
