"""One folder split across machines: ``seesr upscale IN -o OUT --shard K/N`` (seesr/io/shards.py),
the Kubernetes Indexed Job and the Slurm array in deploy/."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest
import yaml

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


# ------------------------------------------------------------------ deploy/
REPO_ROOT = Path(__file__).resolve().parents[1]
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
