"""The README's five-minute tour, command for command, on a fresh installation (issue 10): the
commands are read from the README itself, so the tour cannot drift from what this test runs;
it ends with every workload Running or Succeeded, none pending."""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[2] / "README.md"


def tour_commands() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    block = text.split("## A five-minute tour", 1)[1].split("```", 2)[1]
    out = []
    for line in block.splitlines():
        line = line.split("  #", 1)[0].strip()
        if line.startswith(".venv/bin/gpuplane "):
            out.append(shlex.split(line)[1:])
    return out


def test_the_readme_tour_runs_as_written(make_server, db_url):
    commands = tour_commands()
    assert len(commands) >= 10 and ["top"] in commands
    srv = make_server(db_url, relative_home=True).start()
    for args in commands:
        res = srv.cli(*args)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        if args[0] == "apply":
            assert re.search(r"created|unchanged", res.stdout), res.stdout
    deadline = time.monotonic() + 90
    while True:
        got = srv.cli("get", "workloads", "-o", "json")
        phases = {w["name"]: w["status"]["phase"] for w in json.loads(got.stdout)}
        if all(p in ("Running", "Succeeded") for p in phases.values()) or \
                time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(phases) >= {"hello", "resnet-train", "summarizer", "mig-finetune"}
    assert all(p in ("Running", "Succeeded") for p in phases.values()), phases
