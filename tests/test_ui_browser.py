"""`./start_seesr.sh ui` as typed, over the tiny official weights, used as a person and a client would:
Debian's Chromium driven by Playwright (its own browser download is not used), gradio_client on
``/upscale``, files outside the server's folder, 20 requests in a row, and the clean stop.

The server runs in its own process group on 127.0.0.1 and is always stopped with its whole group.
``SEESR_UI_SCREENSHOT=PATH`` also writes the README's screenshot there (an optimised PNG).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, shared_input
from PIL import Image
from test_cog import assert_upscaled
from tiny_layout import lay_out_tiny_weights

from benchmarks.ui import CHROMIUM, PageServer, open_chromium, set_setting

pytestmark = pytest.mark.slow

RUN_TIMEOUT_MS = 240_000
PHOTO = "179.png"  # a real 128x128 photo
SOAK_REQUESTS, SOAK_WARMUP = 20, 5
SCREENSHOT_MAX_BYTES = 200_000


def start_page(root: Path, weights: Path) -> PageServer:
    """``./start_seesr.sh ui --port P --weights W --device cpu``, as typed, in its own process group."""
    command = [str(REPO_ROOT / "start_seesr.sh"), "ui", "--weights", str(weights), "--device", "cpu"]
    try:
        return PageServer(command, root, {**os.environ, "OMP_NUM_THREADS": "2"})
    except RuntimeError as failure:
        pytest.fail(str(failure))


@pytest.fixture(scope="module")
def weights(tiny, tmp_path_factory) -> Path:
    return lay_out_tiny_weights(tiny, tmp_path_factory.mktemp("ui-weights"))


@pytest.fixture(scope="module")
def server(weights, tmp_path_factory):
    ui = start_page(tmp_path_factory.mktemp("ui"), weights)
    try:
        yield ui
    finally:
        ui.stop()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = ("Debian's Chromium is missing: `./start_seesr.sh setup` installs it as root "
                   "(apt-get install chromium chromium-driver)")  # fmt: skip
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with open_chromium() as context:
        yield context


def drop_file(page, target: str, name: str, data: bytes) -> None:
    """Drag and drop a file onto ``target``, as a file manager does."""
    page.locator(target).evaluate(
        """(element, [name, encoded]) => {
            const bytes = Uint8Array.from(atob(encoded), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "image/png"}));
            for (const kind of ["dragenter", "dragover", "drop"]) {
                element.dispatchEvent(new DragEvent(kind, {dataTransfer: transfer, bubbles: true, cancelable: true}));
            }
        }""",
        [name, base64.b64encode(data).decode()],
    )


def run_and_download(page, expect, engine: str) -> Image.Image:
    """Press Upscale, wait for the report (the click empties it; the last run's status may still say
    Done for a moment), the slider, and download the result."""
    page.click("#upscale-button")
    expect(page.locator("#report")).to_contain_text(f"engine: {engine}", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#status")).to_contain_text("Done")
    expect(page.locator("#result-slider img")).to_have_count(2)
    with page.expect_download() as download:
        page.click("#download-button")
    return Image.open(download.value.path()).copy()


def save_screenshot(png: bytes, path: Path) -> None:
    """The page's screenshot as a small PNG (256 colours, optimised)."""
    with Image.open(io.BytesIO(png)) as shot:
        shot.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def test_a_person_upscales_with_seesr_then_realesrgan_and_downloads(server, browser, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(server.url)
    page.locator("#input-image input[type=file]").set_input_files(str(shared_input(PHOTO)))
    expect(page.locator("#plan")).to_contain_text("128x128 -> 512x512", timeout=60_000)  # the dry run, before any click
    expect(page.locator("#plan")).to_contain_text("engine: seesr (seesr-turbo)")
    expect(page.locator("#plan")).to_contain_text("estimated peak memory")
    set_setting(page, "scale", "2")
    page.get_by_text("Advanced", exact=True).click()
    set_setting(page, "steps", "1")
    set_setting(page, "process_size", "0")
    expect(page.locator("#plan")).to_contain_text("128x128 -> 256x256")
    seesr_output = run_and_download(page, expect, "seesr")
    assert_upscaled(seesr_output, (256, 256))
    used_seed = page.locator("#setting-seed").locator("input, textarea").first.input_value()
    expect(page.locator("#report")).to_contain_text(f"seed: {used_seed}")

    set_setting(page, "num_samples", "2")  # two samples: a gallery, a click compares one, a zip of both
    page.click("#upscale-button")
    expect(page.locator("#status")).to_contain_text("Done: 2 samples of 256x256 (seeds ", timeout=RUN_TIMEOUT_MS)
    seed = int(page.locator("#setting-seed").locator("input, textarea").first.input_value())
    expect(page.locator("#status")).to_contain_text(f"(seeds {seed}, {seed + 1})")
    expect(page.locator("#samples-gallery img")).to_have_count(2)
    after = page.locator("#result-slider img").nth(1)
    first_sample = after.get_attribute("src")
    page.locator("#samples-gallery img").nth(1).click()
    expect(after).not_to_have_attribute("src", first_sample)
    with page.expect_download() as download:
        page.click("#download-button")
    with zipfile.ZipFile(download.value.path()) as bundle:
        assert bundle.namelist() == [f"179_seesr_s{seed}.png", f"179_seesr_s{seed + 1}.png"]
        samples = [np.asarray(Image.open(io.BytesIO(bundle.read(name)))) for name in bundle.namelist()]
    assert samples[0].shape == samples[1].shape == (256, 256, 3) and not np.array_equal(*samples)
    set_setting(page, "num_samples", "")

    set_setting(page, "model", "realesrgan-x4plus")
    expect(page.locator("#plan")).to_contain_text("engine: realesrgan (realesrgan-x4plus)")
    realesrgan_output = run_and_download(page, expect, "realesrgan")
    assert_upscaled(realesrgan_output, (256, 256))
    photo = Image.open(shared_input(PHOTO)).convert("RGB")
    bicubic = np.asarray(photo.resize((256, 256), Image.Resampling.BICUBIC), dtype=np.float32)
    assert np.abs(np.asarray(realesrgan_output, dtype=np.float32) - bicubic).mean() < 20  # the same picture, sharper
    shot = tmp_path / "page.png"
    page.evaluate("window.scrollTo(0, 0)")
    save_screenshot(page.screenshot(), shot)
    assert Image.open(shot).size == (1280, 900) and shot.stat().st_size < SCREENSHOT_MAX_BYTES
    if os.environ.get("SEESR_UI_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["SEESR_UI_SCREENSHOT"])

    page.locator("#input-image button[aria-label='Remove Image']").click()
    drop_file(page, "#input-image button[aria-label^='Drop an image']", "corrupt.png", b"not a picture\n" * 20)
    refused = "Not done: image data is not an image file Pillow can read (unknown or corrupt format)"
    expect(page.locator("#plan")).to_have_text(refused, timeout=60_000)
    page.click("#upscale-button")
    expect(page.locator("#status")).to_have_text(refused, timeout=60_000)
    assert "Traceback" not in page.content()
    page.close()


def test_a_queued_request_shows_its_place_and_cancel_stops_waiting_and_running_runs(server, browser):
    from playwright.sync_api import expect

    first, second = browser.new_page(), browser.new_page()  # two people
    for page in (first, second):
        page.goto(server.url)
        page.locator("#input-image input[type=file]").set_input_files(str(shared_input(PHOTO)))
        expect(page.locator("#plan")).to_contain_text("128x128 -> 512x512", timeout=60_000)
    first.get_by_text("Advanced", exact=True).click()
    set_setting(first, "steps", "8")  # 512 px, 8 steps: long enough to be stopped in the middle
    first.click("#upscale-button")
    expect(first.locator("#result-slider")).to_contain_text("denoising", timeout=RUN_TIMEOUT_MS)  # the progress bar
    second.click("#upscale-button")
    expect(second.locator("#result-slider")).to_contain_text("queue: 1/1", timeout=30_000)  # its place in the queue
    second.click("#cancel-button")
    started = time.monotonic()
    first.click("#cancel-button")
    for page in (first, second):
        expect(page.locator("#status")).to_contain_text("Cancelled after", timeout=60_000)
        expect(page.locator("#status")).to_contain_text("nothing was produced")
        expect(page.locator("#result-slider img")).to_have_count(0)
    assert time.monotonic() - started < 30, "the running run went on"
    set_setting(first, "steps", "1")
    set_setting(first, "scale", "2")
    set_setting(first, "process_size", "0")
    first.click("#upscale-button")
    expect(first.locator("#status")).to_contain_text("Done: 256x256 in ", timeout=RUN_TIMEOUT_MS)
    first.close()
    second.close()


def test_several_images_give_a_gallery_a_reason_for_each_bad_one_and_one_zip(server, browser, tmp_path):
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(server.url)
    page.get_by_role("tab", name="Several images").click()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a picture\n" * 20)
    page.locator("#batch-files input[type=file]").set_input_files([str(shared_input(PHOTO)), str(corrupt)])
    set_setting(page, "model", "realesrgan-x4plus")
    set_setting(page, "scale", "2")
    page.click("#batch-button")
    expect(page.locator("#batch-status")).to_contain_text("Done: 1 of 2 images.", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#batch-status")).to_contain_text("corrupt.png: image data is not an image file Pillow can read")
    expect(page.locator("#batch-gallery img")).to_have_count(1)
    with page.expect_download() as download:
        page.click("#batch-download")
    with zipfile.ZipFile(download.value.path()) as bundle:
        assert bundle.namelist() == ["179_seesr.png"]
        assert_upscaled(Image.open(io.BytesIO(bundle.read("179_seesr.png"))), (256, 256))
    page.close()


def test_gradio_client_calls_upscale_with_keyword_settings(server):
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False)
    photo = handle_file(str(shared_input(PHOTO)))
    first = client.predict(photo, scale=2, steps=1, process_size=0, seed=11, api_name="/upscale")
    again = client.predict(photo, scale="2", steps="1", process_size="0", seed="11", api_name="/upscale")
    with Image.open(first) as a, Image.open(again) as b:
        assert_upscaled(a, (256, 256))
        assert np.array_equal(np.asarray(a), np.asarray(b))  # the same seed, the same image
    jpeg = client.predict(photo, model="realesrgan-x4plus", scale=3, output_format="jpg", api_name="/upscale")
    with Image.open(jpeg) as image:
        assert image.format == "JPEG"
        assert_upscaled(image, (384, 384))
    with pytest.raises(Exception, match=r"invalid settings: scale=20.0 \(allowed: 1.0 to 8.0\)"):
        client.predict(photo, scale=20, api_name="/upscale")


def test_it_serves_no_file_outside_its_own_folder(server):
    for outside in ("/etc/passwd", str(REPO_ROOT / "README.md"), str(server.root / "server-0.log")):
        status, _ = server.get(f"/gradio_api/file={outside}")
        assert status == 403, outside
    folders = list(server.tmp.glob("seesr-ui-*"))
    assert len(folders) == 1  # everything it holds is under one temporary folder


def test_twenty_requests_in_a_row_level_off_in_memory(server):
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False)
    photo = handle_file(str(shared_input(PHOTO)))
    samples = []
    for index in range(SOAK_REQUESTS):
        client.predict(photo, scale=2, steps=1, process_size=0, seed=index, api_name="/upscale")
        samples.append(server.rss())
    after_warmup = samples[SOAK_WARMUP - 1]
    assert max(samples[SOAK_WARMUP:]) <= after_warmup * 1.05, [round(s / 2**20) for s in samples]


def test_stopping_the_server_removes_its_files(weights, tmp_path):
    from gradio_client import Client, handle_file

    ui = start_page(tmp_path, weights)
    try:
        Client(ui.url, verbose=False).predict(handle_file(str(shared_input(PHOTO))), model="realesrgan-x4plus",
                                              scale=2, api_name="/upscale")  # fmt: skip
        assert list(ui.tmp.glob("seesr-ui-*/**/*_seesr.png"))
    finally:
        code = ui.stop()
    assert code == 0, ui.log_tail()
    assert not list(ui.tmp.glob("seesr-ui-*")), list(ui.tmp.iterdir())
    assert "Traceback" not in ui.log_tail(100_000)


def test_the_page_benchmark_prints_both_times_and_the_overhead(weights, browser, tmp_path):
    import re
    import subprocess
    import sys

    command = [sys.executable, "-m", "benchmarks.ui", "--image", str(shared_input(PHOTO)),
               "--weights", str(weights), "--model", "realesrgan-x4plus", "--scale", "2", "--repeats", "1"]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "NO_PROXY": "127.0.0.1,localhost",
                               "no_proxy": "127.0.0.1,localhost"},
                          )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("machine: ") and "threads" in lines[0]
    api, page, inside = (float(re.search(r"median ([\d.]+) s", line).group(1)) for line in lines[2:5])
    assert lines[2].startswith("API (Upscaler.upscale") and lines[3].startswith("page (click to result)")
    assert 0 < inside < page and 0 < api  # the page does the API's work and more
    added = re.match(r"page overhead: best against best [+-][\d.]+ %; added per run, median ([\d.]+) s = \+([\d.]+) %",
                     lines[5])  # fmt: skip
    assert added and float(added.group(1)) == pytest.approx(page - inside, abs=0.02)  # one run: that run
