"""`./start_seesr.sh ui` as typed, over the tiny official weights, used as a person and a client would:
Debian's Chromium driven by Playwright (its own browser download is not used), gradio_client on
``/upscale``, files outside the server's folder, 20 requests in a row, and the clean stop.

The server runs in its own process group on 127.0.0.1 and is always stopped with its whole group.
``SEESR_UI_SCREENSHOT=PATH`` also writes the README's screenshot there (an optimised PNG).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import REPO_ROOT, shared_input
from PIL import Image
from test_cog import assert_upscaled, free_port
from tiny_layout import lay_out_tiny_weights

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
STARTUP_TIMEOUT = 180.0
RUN_TIMEOUT_MS = 240_000
PHOTO = "179.png"  # a real 128x128 photo
SOAK_REQUESTS, SOAK_WARMUP = 20, 5
SCREENSHOT_MAX_BYTES = 200_000


class UiServer:
    """``./start_seesr.sh ui`` in its own process group, its log and its temporary folder (TMPDIR)."""

    def __init__(self, root: Path, weights: Path) -> None:
        self.root, self.tmp = root, root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SEESR_", "GRADIO_", "HF_"))}
        env.update(TMPDIR=str(self.tmp), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1",
                   NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")  # fmt: skip
        for attempt in range(3):  # the free port may be taken before the server binds it
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.log = root / f"server-{attempt}.log"
            with open(self.log, "wb") as out:
                command = [str(REPO_ROOT / "start_seesr.sh"), "ui", "--port", str(self.port), "--weights", str(weights), "--device", "cpu"]
                self.process = subprocess.Popen(command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            if self._wait_ready():
                return
            self.stop()
        pytest.fail(f"no free port for the page:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "address already in use" in self.log_tail().lower():
                    return False
                pytest.fail(f"`start_seesr.sh ui` exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if self.get("/")[0] == 200:
                    return True
            time.sleep(0.5)
        pytest.fail(f"the page was not up after {STARTUP_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def get(self, path: str) -> tuple[int, bytes]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
        try:
            with opener.open(self.url + path, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read()

    def stop(self) -> int | None:
        """SIGTERM to the whole group (the page removes its files), then SIGKILL if it lingers."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout=30)

    def rss(self) -> int:
        """Resident memory of the server (the Python process and any children)."""
        process = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


@pytest.fixture(scope="module")
def weights(tiny, tmp_path_factory) -> Path:
    return lay_out_tiny_weights(tiny, tmp_path_factory.mktemp("ui-weights"))


@pytest.fixture(scope="module")
def server(weights, tmp_path_factory):
    ui = UiServer(tmp_path_factory.mktemp("ui"), weights)
    try:
        yield ui
    finally:
        ui.stop()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = "Debian's Chromium is missing: `./start_seesr.sh setup` installs it as root (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="seesr-chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True, accept_downloads=True,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()


def set_text(page, name: str, value: str) -> None:
    page.locator(f"#setting-{name}").locator("input, textarea").first.fill(value)


def choose(page, name: str, value: str) -> None:
    page.locator(f"#setting-{name}").locator("input").first.click()
    page.get_by_role("option", name=value, exact=True).click()


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
    """Press Upscale, wait for the slider and the report, download the result."""
    page.click("#upscale-button")
    expect(page.locator("#status")).to_contain_text("Done", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#report")).to_contain_text(f"engine: {engine}")
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
    set_text(page, "scale", "2")
    page.get_by_text("Advanced", exact=True).click()
    set_text(page, "steps", "1")
    set_text(page, "process_size", "0")
    expect(page.locator("#plan")).to_contain_text("128x128 -> 256x256")
    seesr_output = run_and_download(page, expect, "seesr")
    assert_upscaled(seesr_output, (256, 256))
    used_seed = page.locator("#setting-seed").locator("input, textarea").first.input_value()
    expect(page.locator("#report")).to_contain_text(f"seed: {used_seed}")

    choose(page, "model", "realesrgan-x4plus")
    expect(page.locator("#plan")).to_contain_text("engine: realesrgan (realesrgan-x4plus)")
    realesrgan_output = run_and_download(page, expect, "realesrgan")
    assert_upscaled(realesrgan_output, (256, 256))
    bicubic = np.asarray(Image.open(shared_input(PHOTO)).convert("RGB").resize((256, 256), Image.Resampling.BICUBIC), dtype=np.float32)
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


def test_cancel_stops_a_run_and_the_page_runs_the_next(server, browser):
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(server.url)
    page.locator("#input-image input[type=file]").set_input_files(str(shared_input(PHOTO)))
    expect(page.locator("#plan")).to_contain_text("128x128 -> 512x512", timeout=60_000)
    page.get_by_text("Advanced", exact=True).click()
    set_text(page, "steps", "8")  # 512 px, 8 steps: long enough to be stopped in the middle
    page.click("#upscale-button")
    expect(page.locator("#result-slider")).to_contain_text("denoising", timeout=RUN_TIMEOUT_MS)  # the progress
    started = time.monotonic()
    page.click("#cancel-button")
    expect(page.locator("#status")).to_contain_text("Cancel", timeout=30_000)
    set_text(page, "steps", "1")
    set_text(page, "scale", "2")
    set_text(page, "process_size", "0")
    page.click("#upscale-button")
    expect(page.locator("#status")).to_contain_text("Done", timeout=RUN_TIMEOUT_MS)
    assert time.monotonic() - started < 60, "the cancelled run went on"
    assert "Done: 256x256" in page.locator("#status").inner_text()
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

    ui = UiServer(tmp_path, weights)
    try:
        Client(ui.url, verbose=False).predict(handle_file(str(shared_input(PHOTO))), model="realesrgan-x4plus",
                                              scale=2, api_name="/upscale")  # fmt: skip
        assert list(ui.tmp.glob("seesr-ui-*/**/*_seesr.png"))
    finally:
        code = ui.stop()
    assert code == 0, ui.log_tail()
    assert not list(ui.tmp.glob("seesr-ui-*")), list(ui.tmp.iterdir())
    assert "Traceback" not in ui.log_tail(100_000)
