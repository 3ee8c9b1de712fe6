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
        (image_uri,) = body["output"]["images"]
        _, payload = decode_data_uri(image_uri)
        with Image.open(io.BytesIO(payload)) as image:
            assert_upscaled(image, (36 * scale, 24 * scale))
        assert body["output"]["seeds"] == [scale]


def test_a_server_without_the_requested_device_is_never_ready(tiny, tmp_path):
    with running_cog_server(tiny, tmp_path / "cog", setup_may_fail=True, SEESR_DEVICE="cuda:99") as cog_server:
        assert cog_server.health["status"] == "SETUP_FAILED", cog_server.health
        logs = cog_server.health["setup"]["logs"]
        assert "ConfigError" in logs and "cuda:99" in logs, logs
        status, body = cog_server.request("POST", "/predictions", {"input": {"image": "data:,x"}})
        assert body.get("status") != "succeeded", body


def test_a_server_without_seesr_weights_is_never_ready(tiny, tmp_path):
    """No SeeSR weights and no network (downloads off): setup fails, and the health check's setup
    logs say which files are missing, where they were looked for, and how to allow Real-ESRGAN."""
    empty = tmp_path / "no-weights"
    with running_cog_server(tiny, tmp_path / "cog", setup_may_fail=True, SEESR_WEIGHTS=str(empty)) as cog_server:
        assert cog_server.health["status"] == "SETUP_FAILED", cog_server.health
        assert cog_server.health["setup"]["status"] == "failed"
        logs = cog_server.health["setup"]["logs"]
        assert "WeightsError: SeeSR weights are missing: 20 files (sd-turbo 11, seesr 5, ram 4)" in logs, logs
        assert "SEESR_ALLOW_FALLBACK=1" in logs and "HF_HUB_OFFLINE is set (offline mode), so seesr did not download anything" in logs
        assert f"DAPE.pth: looked in {empty}/DAPE.pth and the Hugging Face cache" in logs, logs
        status, body = cog_server.request("POST", "/predictions", {"input": {"image": "data:,x"}})
        assert (status, body["status"]) == (503, "failed") and "output" not in body, body  # refused, no image
        assert not empty.exists()  # nothing downloaded, nothing made up


def test_a_server_allowed_to_fall_back_says_so_in_every_output(tiny, tmp_path, lr_image):  # noqa: F811
    environment = {"SEESR_WEIGHTS": str(tmp_path / "no-weights"), "SEESR_ALLOW_FALLBACK": "1"}
    with running_cog_server(tiny, tmp_path / "cog", **environment) as cog_server:
        assert cog_server.health["status"] == "READY"
        assert "SEESR_ALLOW_FALLBACK=1: predictions run the bundled Real-ESRGAN" in cog_server.health["setup"]["logs"]
        small = data_uri(lr_image.crop((0, 0, 8, 6)))  # Real-ESRGAN on the CPU: a few pixels suffice
        for scale in (2, 3):
            status, body = cog_server.predict({"image": small, "scale": scale, "seed": 5})
            assert status == 200 and body["status"] == "succeeded", body
            output = body["output"]
            assert output["engine"] == "realesrgan" and output["model"] == "realesrgan-x4plus", output
            assert output["fallback_reason"].startswith("SeeSR weights are missing: 20 files"), output
            assert output["seeds"] == []
            (image_uri,) = output["images"]
            with Image.open(io.BytesIO(decode_data_uri(image_uri)[1])) as image:
                assert_upscaled(image, (8 * scale, 6 * scale), min_colours=20)
