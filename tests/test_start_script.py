"""`./start_seesr.sh benchmark` and `./start_seesr.sh python`, run as the README types them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SHARED


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEESR_SHARED": str(SHARED), "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run(
        [str(REPO_ROOT / "start_seesr.sh"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_python_runs_in_the_project_environment(tmp_path):
    done = run_script("python", "-c", "import seesr, sys; print(seesr.__version__, sys.prefix)", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    version, prefix = done.stdout.split()
    assert version and Path(prefix).resolve() == (REPO_ROOT / ".venv").resolve()


@pytest.mark.slow
def test_benchmark_smoke_writes_its_record(tiny_weights_dir, tmp_path):
    record = tmp_path / "bench.json"
    done = run_script(
        "benchmark", "--smoke", "--weights", str(tiny_weights_dir), "--steps", "1", "--warmup", "0", "--repeats", "1",
        "--json", str(record), cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads(record.read_text())
    runs = saved["variants"]["default"]["runs"]
    assert runs and all(run["stages"]["end_to_end"]["median"] > 0 for run in runs)
    assert saved["machine"]["cpu"] in done.stdout  # the printed table names the machine


def test_the_test_command_runs_the_slow_tests_unless_told_not_to(tmp_path):
    """`./start_seesr.sh test` (CI's command) runs everything; `-m "not slow"` leaves the slow ones out."""
    files = ("tests/test_weights.py", "tests/test_memory_discipline.py")
    slow = ("test_wheel_ships_the_manifest", "test_resident_memory_stays_flat_over_100_predictions")

    def collected(*args: str) -> str:
        done = run_script("test", "--collect-only", "-q", "-p", "no:cacheprovider", *args, *files, cwd=tmp_path)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    everything, quick = collected(), collected("-m", "not slow")
    for name in slow:
        assert f"::{name}" in everything and f"::{name}" not in quick
    assert "::test_models_load_lazily_and_unload" in quick
