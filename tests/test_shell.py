"""The shell scripts a newcomer meets: setup.sh sourced into their shell, and the wrappers."""
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bash(script, cwd):
    """Runs `script` in a plain bash (no project Python on PATH); returns the result."""
    path = ":".join(p for p in os.environ["PATH"].split(":") if ".venv" not in p)
    return subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PATH": path})


def test_sourcing_setup_keeps_the_shell_as_it_was(tmp_path):
    run = bash(f"set +eu; before=$(set -o); cd {tmp_path}; source {REPO}/tools/setup.sh; "
               "echo rc=$?; [ \"$before\" = \"$(set -o)\" ] && echo options kept; pwd; "
               "command -v python", tmp_path)
    lines = run.stdout.split()
    assert "rc=0" in lines and "kept" in lines, run.stderr
    assert str(tmp_path) in lines
    assert lines[-1] == str(REPO / ".venv" / "bin" / "python")


def test_a_wrapper_runs_with_the_projects_python_in_a_plain_shell(tmp_path):
    run = bash(f"{REPO}/tools/evaluate.sh --help", tmp_path)
    assert run.returncode == 0, run.stderr
    assert "--bootstrap" in run.stdout
