"""One folder split across machines: ``seesr upscale IN -o OUT --shard K/N`` (seesr/io/shards.py),
the Kubernetes Indexed Job and the Slurm array in deploy/."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest
import yaml
from PIL import Image

from conftest import SHARED
from seesr.cli import main
from seesr.errors import ConfigError
from seesr.io.shards import parse_shard, shard_of
from seesr.settings.declare import DECLARED, env_name


# ------------------------------------------------------------------ the split
def test_an_input_s_shard_is_the_sha256_of_its_relative_path_mod_n():
    for relative in ["a/x.png", "photo.jpg", "deep/er/ünïcode name.webp"]:
        digest = hashlib.sha256(relative.encode()).hexdigest()
        for count in (1, 2, 3, 7):
            assert shard_of(relative, count) == int(digest[:16], 16) % count
    # the same on every machine: the path's text with "/", whatever the local separator
    assert shard_of(PureWindowsPath("deep\\er\\x.png"), 5) == shard_of(PurePosixPath("deep/er/x.png"), 5)


def test_shards_are_balanced_over_many_inputs():
    counts = [0] * 4
    for number in range(4000):
        counts[shard_of(f"frames/{number:06d}.png", 4)] += 1
    assert all(900 < count < 1100 for count in counts), counts


# ------------------------------------------------------------------ --shard K/N, auto/N, auto
@pytest.mark.parametrize(
    ("text", "environ", "index", "count"),
    [
        ("1/3", {}, 1, 3),
        ("0/1", {"JOB_COMPLETION_INDEX": "5"}, 0, 1),  # explicit K/N: the environment is not read
        ("auto/4", {"JOB_COMPLETION_INDEX": "2"}, 2, 4),
        ("auto/4", {"JOB_COMPLETION_INDEX": "3", "SLURM_ARRAY_TASK_ID": "0"}, 3, 4),  # Kubernetes first
        ("auto", {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3"}, 2, 3),
        ("auto", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "8"}, 4, 8),
        ("auto", {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "4",
                  "SLURM_ARRAY_TASK_COUNT": "4"}, 3, 4),  # --array=0-15:4
        ("auto/2", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "8"}, 1, 2),  # N given wins
    ],
)  # fmt: skip
def test_shard_from_flag_or_scheduler(text, environ, index, count):
    shard = parse_shard(text, environ)
    assert (shard.index, shard.count) == (index, count)


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("3/3", {}, "--shard '3/3': shard 3 (from --shard) is not one of 0 to 2"),
        ("-1/2", {}, "--shard '-1/2': shard -1 (from --shard) is not one of 0 to 1"),
        ("0/0", {}, "--shard '0/0': N=0, the number of shards, must be at least 1"),
        ("2", {}, "--shard '2': give K/N (this worker does shard K of N, K from 0 to N-1), auto/N or auto"),
        ("1/", {}, "--shard '1/': give K/N"),
        ("1/x", {}, "--shard '1/x': N='x' is not a whole number"),
        ("one/2", {}, "--shard 'one/2': K='one' is not a whole number"),
        ("auto/2", {}, "--shard 'auto/2': neither JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) nor "
                       "SLURM_ARRAY_TASK_ID (a Slurm job array) is set; give the shard as K/N"),
        ("auto", {"JOB_COMPLETION_INDEX": "0"}, "--shard 'auto': the number of shards is not known; give it as auto/N"),
        ("auto/2", {"JOB_COMPLETION_INDEX": "x"}, "JOB_COMPLETION_INDEX='x' is not a whole number"),
        ("auto/4", {"JOB_COMPLETION_INDEX": "4"}, "--shard 'auto/4': shard 4 (from JOB_COMPLETION_INDEX=4) is not one of 0 to 3"),
        ("auto", {"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_COUNT": "8"},
         "--shard 'auto': shard 8 (from SLURM_ARRAY_TASK_ID=8) is not one of 0 to 7"),
        ("auto", {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_STEP": "4", "SLURM_ARRAY_TASK_COUNT": "4"},
         "--shard 'auto': SLURM_ARRAY_TASK_ID=6 is not in the array 0, 4, ...; give the shard as K/N"),
    ],
)  # fmt: skip
def test_a_bad_shard_is_one_line(text, environ, message):
    with pytest.raises(ConfigError) as refused:
        parse_shard(text, environ)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value), str(refused.value)


# ------------------------------------------------------------------ workers over one folder
REPO_ROOT = Path(__file__).resolve().parents[1]
REALSR_LR = SHARED / "data" / "realsr" / "lr"
FAST = ["--model", "realesr-animevideov3-x2", "--scale", "2"]
"""Real-ESRGAN's small network: sharding is the point, not the model."""
WORKER_TIMEOUT = 300


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder of seven small real photos (16x12 crops of RealSR low-resolution captures)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for number, source in enumerate(sorted(REALSR_LR.glob("*.png"))[:7]):
        with Image.open(source) as image:
            image.convert("RGB").crop((0, 0, 16, 12)).save(folder / f"photo{number}.png")
    return folder


def shards_of(folder: Path, count: int) -> list[set[str]]:
    """The names of each shard's inputs (the split the tests expect: sha256 of the relative path)."""
    shards: list[set[str]] = [set() for _ in range(count)]
    for path in folder.iterdir():
        shards[shard_of(path.name, count)].add(path.name)
    return shards


def worker(folder: Path, out: Path, shard: str, *flags: str, **environment: str) -> subprocess.Popen:
    """``python -m seesr.cli upscale FOLDER -o OUT --shard SHARD FLAGS`` in a process group of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEESR_", "SLURM_", "JOB_COMPLETION"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), **environment)
    command = [sys.executable, "-m", "seesr.cli", "upscale", str(folder), "-o", str(out), "--shard", shard, *flags]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def finish(process: subprocess.Popen) -> tuple[str, str]:
    """Its output once it exits 0; killed with its group on a timeout or failure."""
    try:
        out, err = process.communicate(timeout=WORKER_TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, err[-3000:]
    return out, err


def run_log(out: Path) -> dict[str, list[dict]]:
    """Each resume record file of a run, by name, as its JSON records."""
    return {log.name: [json.loads(line) for line in log.read_text().splitlines()]
            for log in sorted((out / ".seesr-batch").glob("*.jsonl"))}  # fmt: skip


def outputs(out: Path) -> set[str]:
    return {path.name for path in out.iterdir() if path.is_file()}


@pytest.mark.slow
def test_three_workers_write_every_output_exactly_once(photos, tmp_path):
    out = tmp_path / "out"
    workers = [worker(photos, out, f"{index}/3", *FAST) for index in range(3)]
    printed = [finish(process)[0] for process in workers]
    expected = shards_of(photos, 3)
    assert all(expected) and set().union(*expected) == {f"photo{n}.png" for n in range(7)}
    assert outputs(out) == set().union(*expected)
    logs = run_log(out)
    assert sorted(logs) == ["shard0of3-rank0.jsonl", "shard1of3-rank0.jsonl", "shard2of3-rank0.jsonl"]
    done = [Path(record["target"]).name for records in logs.values() for record in records if record["status"] == "done"]
    assert sorted(done) == sorted(outputs(out))  # each output written once, by one worker
    for index in range(3):
        assert {Path(r["target"]).name for r in logs[f"shard{index}of3-rank0.jsonl"]} == expected[index]
        assert {Path(line.split(":")[0]).name for line in printed[index].splitlines()} == expected[index]


@pytest.mark.slow
def test_accelerate_splits_a_shard_between_its_processes(photos, tmp_path):
    """``accelerate launch --num_processes 2 ... --shard K/3`` (a node of a multi-node job): the shard
    first, then the processes split the shard's inputs; each process its own run log."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEESR_", "SLURM_", "JOB_COMPLETION"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    shards = shards_of(photos, 3)
    index = max(range(3), key=lambda k: len(shards[k]))
    mine = shards[index]
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "-m", "seesr.cli", "upscale",
               str(photos), "-o", str(out), "--shard", f"{index}/3", *FAST]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(mine) >= 2 and outputs(out) == mine
    logs = run_log(out)
    assert sorted(logs) == [f"shard{index}of3-rank0.jsonl", f"shard{index}of3-rank1.jsonl"]
    by_rank = [{Path(r["target"]).name for r in records if r["status"] == "done"} for records in logs.values()]
    assert all(by_rank) and not by_rank[0] & by_rank[1] and by_rank[0] | by_rank[1] == mine


@pytest.mark.parametrize("index", [0, 1, 2])
def test_the_schedulers_variables_select_the_same_shard_as_k_of_n(photos, tmp_path, monkeypatch, capsys, index):
    """``--shard auto/3`` in pod K of a Kubernetes Indexed Job, ``--shard auto`` in task K+1 of a Slurm
    array numbered from 1, and ``--shard K/3`` plan the same outputs (a dry run: nothing is loaded)."""
    for name in [name for name in os.environ if name.startswith(("SEESR_", "SLURM_", "JOB_COMPLETION"))]:
        monkeypatch.delenv(name)
    arguments = ["upscale", str(photos), "-o", str(tmp_path / "out"), "--dry-run", "--json", *FAST, "--shard"]
    planned = {}
    for source, spec, environment in [
        ("--shard", f"{index}/3", {}),
        (f"JOB_COMPLETION_INDEX={index}", "auto/3", {"JOB_COMPLETION_INDEX": str(index)}),
        (f"SLURM_ARRAY_TASK_ID={index + 1}", "auto",
         {"SLURM_ARRAY_TASK_ID": str(index + 1), "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"}),
    ]:  # fmt: skip
        with monkeypatch.context() as scheduler:
            for name, value in environment.items():
                scheduler.setenv(name, value)
            assert main([*arguments, spec]) == 0
        captured = capsys.readouterr()
        lines = [json.loads(line) for line in captured.out.splitlines()]
        assert {line["status"] for line in lines} == {"planned"}
        planned[spec] = {Path(line["output"]).name for line in lines}
        assert f"seesr: shard {index} of 3 ({source}): {len(lines)} of 7 outputs" in captured.err, captured.err
    assert list(planned.values()) == [shards_of(photos, 3)[index]] * 3, planned


@pytest.mark.parametrize(
    ("spec", "environment", "message"),
    [("auto/3", {}, "seesr: --shard 'auto/3': neither JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) nor "
                    "SLURM_ARRAY_TASK_ID (a Slurm job array) is set; give the shard as K/N"),
     ("3/3", {}, "seesr: --shard '3/3': shard 3 (from --shard) is not one of 0 to 2"),
     ("auto", {"JOB_COMPLETION_INDEX": "1"}, "seesr: --shard 'auto': the number of shards is not known; give it as auto/N")],
)  # fmt: skip
def test_a_bad_shard_on_the_command_line_is_one_line_and_does_nothing(photos, tmp_path, monkeypatch, capsys, spec,
                                                                      environment, message):  # fmt: skip
    for name in [name for name in os.environ if name.startswith(("SLURM_", "JOB_COMPLETION"))]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(["upscale", str(photos), "-o", str(tmp_path / "out"), "--shard", spec, *FAST]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == message and captured.out == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_killed_worker_run_again_finishes_only_its_own_remaining_files(photos, tmp_path):
    out = tmp_path / "out"
    shards = shards_of(photos, 3)
    index = max(range(3), key=lambda k: len(shards[k]))  # the biggest shard: something is left when it is killed
    mine = shards[index]
    assert len(mine) >= 3
    slow = ["--engine", "realesrgan", "--scale", "2"]  # x4plus: about a second a file, so the kill lands mid-run
    first = worker(photos, out, f"{index}/3", *slow)
    try:
        deadline = time.monotonic() + WORKER_TIMEOUT
        while not (out.is_dir() and outputs(out) & mine) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # as a node that dies
        first.wait()
    finished = {name: (out / name).stat().st_mtime_ns for name in outputs(out) & mine}
    assert 1 <= len(finished) < len(mine), (finished, first.stderr.read()[-2000:])
    assert outputs(out) <= mine

    _, err = finish(worker(photos, out, f"{index}/3", *slow))
    assert outputs(out) == mine  # its own files, all of them, and no other shard's
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == finished  # not redone
    for name in finished:
        assert f"{out / name} finished by an earlier run" in err, err
    (log,) = run_log(out).values()
    redone = [Path(r["target"]).name for r in log if r["status"] == "done"]
    assert sorted(redone) == sorted(mine)  # each done once: the first run's, then the rest
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # a write the kill cut short is cleaned up


# ------------------------------------------------------------------ deploy/
MANIFEST = REPO_ROOT / "deploy" / "kubernetes" / "indexed-job.yaml"
SLURM_SCRIPT = REPO_ROOT / "deploy" / "slurm" / "array.sh"


def test_the_kubernetes_manifest_is_an_indexed_job_of_n_shards():
    (job,) = list(yaml.safe_load_all(MANIFEST.read_text()))
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job") and job["metadata"]["name"] == "seesr-upscale"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["backoffLimitPerIndex"] >= 1 and spec["template"]["spec"]["restartPolicy"] == "Never"
    (container,) = spec["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:4] == ["python", "-m", "seesr.cli", "upscale"]
    shard = command[command.index("--shard") + 1]
    assert shard == f"auto/{spec['completions']}" and spec["parallelism"] <= spec["completions"]
    (mount,) = container["volumeMounts"]
    (volume,) = spec["template"]["spec"]["volumes"]
    assert volume["name"] == mount["name"] and volume["persistentVolumeClaim"]["claimName"] == "seesr-data"
    inputs, output = command[4], command[command.index("-o") + 1]
    env = {item["name"]: item["value"] for item in container["env"]}
    for path in (inputs, output, env["SEESR_WEIGHTS"]):  # everything a pod reads or writes is on the shared volume
        assert PurePosixPath(path).is_relative_to(mount["mountPath"]), path
    assert env["HF_HUB_OFFLINE"] == "1"  # N pods never download the weights at once
    assert set(env) - {"HF_HUB_OFFLINE"} <= {env_name(name) for name in DECLARED} | {"SEESR_WEIGHTS"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_slurm_script_runs_one_array_task(photos, tmp_path):
    """deploy/slurm/array.sh as sbatch runs it for task 1 of ``--array=0-2``: shard 1 of 3."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEESR_", "SLURM_", "JOB_COMPLETION"))}
    env.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),  # the activated venv
               PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_MIN="0",
               SLURM_ARRAY_TASK_MAX="2", SLURM_ARRAY_TASK_COUNT="3", SLURM_ARRAY_JOB_ID="4242")  # fmt: skip
    done = subprocess.run([str(SLURM_SCRIPT), str(photos), str(out), *FAST], env=env, capture_output=True, text=True,
                          timeout=WORKER_TIMEOUT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert outputs(out) == shards_of(photos, 3)[1]
    assert "seesr: shard 1 of 3 (SLURM_ARRAY_TASK_ID=1)" in done.stderr
    assert list(run_log(out)) == ["shard1of3-rank0.jsonl"]
    usage = subprocess.run([str(SLURM_SCRIPT), str(photos)], env=env, capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: sbatch --array=0-N deploy/slurm/array.sh IN_DIR OUT_DIR")
