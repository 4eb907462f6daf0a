"""Edge rules for text a caller sends: what may reach a process, a file name, a log or a label.

Pure checks shared by every request model (``WorkloadSpec`` and the service specs) so that a
request is refused at the edge (422, naming the field) instead of failing later in the control
loop, the database or ``exec``:

- **Control characters.** Every string of a request (names, labels and their keys, selectors,
  tolerations, taints, descriptions, env keys ...) refuses C0 controls (U+0000-U+001F, tab and
  newline included), DEL (U+007F) and C1 controls (U+0080-U+009F). Commands, args and env
  *values* alone may hold tab and newline (a multi-line ``sh -c`` script, a PEM certificate);
  every other control, NUL first, is refused there too.
- **Reserved environment names.** A task's ``env`` may not set ``PATH``,
  ``CUDA_VISIBLE_DEVICES`` or any ``LD_*``, ``GPUPLANE_*`` or ``NVIDIA_*`` name (case-sensitive,
  as the environment is): the runtime sets them, and honouring them would let a task load code
  into the launcher (``LD_PRELOAD``), pick binaries (``PATH``), or reach GPUs it was not given.
  Names must be valid environment names (``[A-Za-z_][A-Za-z0-9_]*``; no ``=``).
- **Reserved labels.** Keys under ``gpuplane.io/`` (among them the ``gpuplane.io/in.*``
  jurisdiction labels) are set by gpuplane itself; callers may not put them on workloads or
  tolerate taints under that prefix, and only a global admin may put them on hosts and sites
  (checked in ``service/inventory.py``). ``USER_LABELS`` lists the ones a workload may carry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: Every control character: C0, DEL and C1.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Controls refused in commands, args and env values: all but tab and newline.
CONTROL_EXCEPT_TAB_LF_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

#: A pattern for free-text query parameters: no control characters.
PRINTABLE_RE = r"^[^\x00-\x1f\x7f-\x9f]*$"

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_ENV_NAMES = frozenset({"PATH", "CUDA_VISIBLE_DEVICES"})
RESERVED_ENV_PREFIXES = ("LD_", "GPUPLANE_", "NVIDIA_")

RESERVED_LABEL_PREFIX = "gpuplane.io/"
#: Reserved-prefix labels a workload may carry (read by gpuplane, not claims about a host).
USER_LABELS = frozenset({"gpuplane.io/sim-duration-s"})


def _show(value: str) -> str:
    """``value`` quoted with its control characters escaped (never echo them raw)."""
    text = value if len(value) <= 40 else value[:40] + "..."
    return "'" + text.encode("unicode_escape").decode("ascii").replace("'", "\\'") + "'"


def control_problem(value: str, *, allow_tab_lf: bool = False) -> str | None:
    """Why ``value`` is refused for its control characters, or ``None``."""
    m = (CONTROL_EXCEPT_TAB_LF_RE if allow_tab_lf else CONTROL_RE).search(value)
    if m is None:
        return None
    allowed = " (tab and newline are allowed here)" if allow_tab_lf else ""
    return (f"contains the control character U+{ord(m.group()):04X} at position {m.start()}; "
            f"control characters are not allowed{allowed}")


def text_problems(value: Any, *, allow_tab_lf: bool = False, where: str = "") -> list[str]:
    """Problems with every string inside ``value`` (a string, a list/tuple of them, a dict:
    keys and values). Nested models are skipped: they check their own fields. Each problem
    starts with where it is (``[1]``, ``['KEY']``, ``key 'K'``) relative to the field."""
    out: list[str] = []
    if isinstance(value, str):
        p = control_problem(value, allow_tab_lf=allow_tab_lf)
        if p:
            out.append(f"{where} {p}".strip() if where else p)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            out += text_problems(item, allow_tab_lf=allow_tab_lf, where=f"{where}[{i}]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                p = control_problem(key)
                if p:
                    out.append(f"{where} key {_show(key)} {p}".strip())
            out += text_problems(item, allow_tab_lf=allow_tab_lf,
                                 where=f"{where}[{_show(key) if isinstance(key, str) else key}]")
    return out


def env_name_problem(name: str) -> str | None:
    """Why ``name`` may not be set in a task's environment, or ``None``."""
    if not ENV_NAME_RE.match(name):
        return (f"{_show(name)} is not an environment variable name "
                "(letters, digits and _, not starting with a digit; no '=')")
    if name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIXES):
        return (f"{name!r} is reserved: PATH, CUDA_VISIBLE_DEVICES and LD_*, GPUPLANE_*, "
                "NVIDIA_* names are set by the runtime, not by a task's spec")
    return None


#: Validation context for specs read back from the store: the edge rules above are not applied
#: again (``WorkloadSpec.model_validate(raw, context=STORED)``). A spec an earlier version
#: accepted stays readable (DESIGN invariant 5) and one old row cannot break every listing and
#: every tick (invariant 8); whatever in it cannot run fails when its task starts.
STORED = {"gpuplane.stored": True}


def is_stored(info: Any) -> bool:
    """True when a validator runs on a spec read from the store (``context=STORED``)."""
    return bool(getattr(info, "context", None) and info.context.get("gpuplane.stored"))


def is_reserved_label(key: str) -> bool:
    return key.startswith(RESERVED_LABEL_PREFIX)


def reserved_labels(keys: Iterable[str], allowed: frozenset[str] = frozenset()) -> list[str]:
    """The keys under ``gpuplane.io/`` not in ``allowed``, sorted."""
    return sorted(k for k in keys if is_reserved_label(k) and k not in allowed)
