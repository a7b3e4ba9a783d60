"""Write pip constraints that pin every dependency of pyproject.toml (core and every extra) to its lower bound.

CI installs with them (scripts/lowest_env.sh) and runs the suite, so the bounds users see are tested ones and
cannot drift from what CI installs. A dependency without a lower bound is an error: its oldest release is untested.
Needs Python 3.11+ (tomllib), as CI's python3 is.

    python3 scripts/lowest_constraints.py > constraints.txt     # the pins
    .venv-lowest/bin/python scripts/lowest_constraints.py --check   # that environment has exactly them
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

NEWEST_ONLY = {"rag-clients"}
"""extras tested at their newest versions only (setup.sh dev installs them, .venv-lowest does not): cohere-haystack's
oldest usable release needs a newer cohere than the clients extra's bound, so the two cannot share one lowest stack."""
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*(?:;.*)?$")


def lowest(requirement: str) -> tuple[str, str]:
    """(name, lowest version) of one requirement: its `>=` or `==` clause."""
    match = REQUIREMENT.match(requirement)
    if not match:
        raise ValueError(f"cannot parse the requirement {requirement!r}")
    name, spec = match.groups()
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        operator, version = re.match(r"(===|==|>=|<=|~=|!=|<|>)\s*(.+)", clause).groups()
        if operator in (">=", "==", "~="):
            return name, version
    raise ValueError(f"{requirement!r} has no lower bound (>=, == or ~=): give it the oldest version CI tests")


def constraints(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for name, extra in project.get("optional-dependencies", {}).items():
        if name in NEWEST_ONLY:
            continue
        requirements += [r for r in extra if not r.startswith(project["name"] + "[")]  # self-references add nothing
    pins: dict[str, str] = {}
    for requirement in requirements:
        name, version = lowest(requirement)
        key = re.sub(r"[-_.]+", "-", name).lower()
        if pins.get(key, version) != version:
            raise ValueError(f"{name} has two lower bounds: {pins[key]} and {version}")
        pins[key] = version
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def check(pins: list[str]) -> list[str]:
    """The pins this Python's environment does not hold (a local label such as torch's +cpu is ignored)."""
    from importlib.metadata import PackageNotFoundError, version

    wrong = []
    for pin in pins:
        name, wanted = pin.split("==")
        try:
            found = version(name).split("+")[0]
        except PackageNotFoundError:
            found = "absent"
        if not _same(found, wanted):
            wrong.append(f"{name} {found} (wanted {wanted})")
    return wrong


def _same(found: str, wanted: str) -> bool:
    """1.0 == 1.0.0, as pip reads `==1.0`."""
    a, b = found.split("."), wanted.split(".")
    width = max(len(a), len(b))
    return a + ["0"] * (width - len(a)) == b + ["0"] * (width - len(b))


if __name__ == "__main__":
    pins = constraints(Path(__file__).resolve().parents[1] / "pyproject.toml")
    if sys.argv[1:] == ["--check"]:
        wrong = check(pins)
        if wrong:
            sys.exit("not at the lower bound: " + ", ".join(wrong))
        print("every dependency at its lower bound:", " ".join(pins))
    else:
        print("\n".join(pins))
