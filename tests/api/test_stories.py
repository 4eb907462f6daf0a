"""API behaviour as declarative stories (STYLE habit 11): one YAML file per resource or role,
ordered like a user session. Each step: ``user``, one of ``GET/POST/PUT/PATCH/DELETE: path``,
optional ``json``, expected ``status``, ``expect`` (dotted paths into the JSON answer -> value;
``len(path)`` for lengths), ``save`` (name -> dotted path) reused later as ``$name``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

STORIES = sorted((Path(__file__).parent / "stories").glob("*.yaml"))
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _dig(obj: Any, path: str) -> Any:
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        obj = obj[int(part[1:-1])] if part.startswith("[") else obj[part]
    return obj


def _subst(value: Any, saved: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return re.sub(r"\$(\w+)", lambda m: str(saved[m.group(1)]), value)
    if isinstance(value, list):
        return [_subst(v, saved) for v in value]
    if isinstance(value, dict):
        return {k: _subst(v, saved) for k, v in value.items()}
    return value


@pytest.mark.parametrize("story", STORIES, ids=lambda p: p.stem)
def test_story(world, story):
    saved: dict[str, Any] = {}
    for n, step in enumerate(yaml.safe_load(story.read_text(encoding="utf-8"))):
        where = f"{story.name} step {n + 1} ({step.get('name', '')})"
        (method,) = [m for m in METHODS if m in step]
        url = _subst(step[method], saved)
        kw = {"json": _subst(step["json"], saved)} if "json" in step else {}
        user = step.get("user", "admin")
        token = world.tokens.get(user) or saved[user.split("-")[0]]
        resp = world.client.request(method, url, headers={"Authorization": f"Bearer {token}"},
                                    **kw)
        assert resp.status_code == step.get("status", 200), f"{where}: {resp.text}"
        body = resp.json() if resp.content and "json" in resp.headers["content-type"] else None
        for path, want in (step.get("expect") or {}).items():
            got = len(_dig(body, path[4:-1])) if path.startswith("len(") else _dig(body, path)
            assert got == _subst(want, saved), f"{where}: {path} = {got!r}, want {want!r}"
        for name, path in (step.get("save") or {}).items():
            saved[name] = _dig(body, path)
