"""Hostile Cog requests against the real server (the harness of tests/test_cog.py): a prediction
reads only what the request carried, never names the server's files, and a server that cannot
predict never reports READY."""

from __future__ import annotations

import base64
import io
import threading

import pytest
from PIL import Image
from test_cog import assert_upscaled, data_uri, decode_data_uri, lr_image, running_cog_server, server  # noqa: F401

pytestmark = pytest.mark.slow  # every test here runs the real Cog server
NOT_SENT = "the image must be sent with the request"


def assert_failed_without_output(body: dict) -> str:
    assert body["status"] == "failed", body
    assert body.get("output") is None
    return body["error"]


def test_a_prediction_never_reads_a_path_on_the_server(server, lr_image, tmp_path):  # noqa: F811
    """Existing image, missing file, folder, file:// URL, relative path: one identical refusal."""
    secret = tmp_path / "secret.png"
    lr_image.save(secret)
    probes = [str(secret), str(tmp_path / "missing.png"), str(tmp_path), secret.as_uri(), "predict.py"]
    errors = set()
    for probe in probes:
        status, body = server.predict({"image": probe, "scale": 2, "steps": 1})
        assert status == 200, body
        errors.add(assert_failed_without_output(body))
    (error,) = errors  # the same answer whether the path exists, is a folder or is missing
    assert "InputError" in error and NOT_SENT in error, error
    assert str(tmp_path) not in error


@pytest.mark.parametrize(
    "uri",
    [
        "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n truncated").decode(),
        "data:image/png;base64,@@@@",
        "data:,not-an-image",
        "data:image/png;base64,",
    ],
)
def test_a_malformed_data_uri_fails_without_naming_server_files(server, uri):  # noqa: F811
    status, body = server.predict({"image": uri, "scale": 2, "steps": 1})
    assert status in (200, 422), body
    if status == 200:
        error = assert_failed_without_output(body)
        assert "InputError" in error, error
        assert str(server.log.parent) not in error and "/tmp" not in error, error


def test_an_oversize_image_is_refused_before_decoding(server):  # noqa: F811
    buffer = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buffer, "PNG")  # 25 MP, a few kB of zeros
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    status, body = server.predict({"image": uri, "scale": 2, "steps": 1})
    assert status == 200, body
    error = assert_failed_without_output(body)
    assert "InputError" in error and "5000x5000" in error and "input limit" in error, error
    assert str(server.log.parent) not in error


def test_concurrent_requests_each_get_their_own_image(server, lr_image):  # noqa: F811
    results: dict[int, tuple[int, dict]] = {}

    def predict(scale: int) -> None:
        results[scale] = server.predict({"image": data_uri(lr_image), "scale": scale, "steps": 1, "seed": scale})

    threads = [threading.Thread(target=predict, args=(scale,)) for scale in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for scale, (status, body) in results.items():
        assert status == 200 and body["status"] == "succeeded", body
        _, payload = decode_data_uri(body["output"])
        with Image.open(io.BytesIO(payload)) as image:
            assert_upscaled(image, (36 * scale, 24 * scale))


def test_a_server_without_the_requested_device_is_never_ready(tiny, tmp_path):
    with running_cog_server(tiny, tmp_path / "cog", setup_may_fail=True, SEESR_DEVICE="cuda:99") as cog_server:
        assert cog_server.health["status"] == "SETUP_FAILED", cog_server.health
        logs = cog_server.health["setup"]["logs"]
        assert "ConfigError" in logs and "cuda:99" in logs, logs
        status, body = cog_server.request("POST", "/predictions", {"input": {"image": "data:,x"}})
        assert body.get("status") != "succeeded", body
