"""What the web page adds to an upscale: from the click on Upscale to the result on the page, against
the Python API's call for the same image and settings.

    python -m benchmarks.ui --image photo.png --model realesrgan-x4plus --scale 4 --repeats 3

The page side starts ``seesr ui`` on 127.0.0.1 (its own process group, stopped at the end), opens
it in Debian's Chromium (Playwright, ``/usr/bin/chromium``), uploads the image, sets the settings in
the page's controls and times each click on Upscale until the page says Done with the slider
shown; the API side times ``Upscaler.upscale`` in this process. After one warm-up of each, they
run alternately, ``--repeats`` times each. The overhead is printed two ways: the best page run
against the best API run (a neighbour on a shared machine only ever slows a run down), and per
page run, its click-to-result time less the time its own ``Upscaler.upscale`` call took in the
server (the page reports it), which no neighbour can move much. The machine's CPU is printed too.
Also: the browser test's server and browser helpers (:class:`PageServer`, :func:`open_chromium`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from benchmarks.common import cpu_description

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
STARTUP_TIMEOUT = 180.0
RESULT_SHOWN = """() => document.querySelector("#status").innerText.includes("Done")
    && [...document.querySelectorAll("#result-slider img")].filter(i => i.complete && i.naturalWidth > 0).length === 2"""
"""The page shows a result: its status says Done and both slider images are drawn."""
POLL_MS = 20
"""How often the benchmark looks for the result (Playwright's ``expect`` backs off to a second)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PageServer:
    """``seesr ui`` started by ``command`` (the port is appended) in its own process group on
    127.0.0.1, with its temporary files under ``root/tmp``; :meth:`stop` stops the whole group."""

    def __init__(self, command: Sequence[str], root: Path, env: dict[str, str] | None = None) -> None:
        self.root, self.tmp = root, root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        given = env if env is not None else os.environ
        environment = {k: v for k, v in given.items() if not k.startswith(("SEESR_", "GRADIO_"))}
        environment.update(TMPDIR=str(self.tmp), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
                           NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")  # fmt: skip
        for attempt in range(3):  # the free port may be taken before the server binds it
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.log = root / f"server-{attempt}.log"
            with open(self.log, "wb") as out:
                self.process = subprocess.Popen([*command, "--port", str(self.port)], cwd=root, env=environment,
                                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True)  # fmt: skip
            try:
                if self._wait_ready():
                    return
            except BaseException:
                self.stop()
                raise
            self.stop()
        raise RuntimeError(f"no free port for the page:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def _wait_ready(self) -> bool:
        """True once the page answers; False when the port was taken."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "address already in use" in self.log_tail().lower():
                    return False
                raise RuntimeError(f"seesr ui exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if self.get("/")[0] == 200:
                    return True
            time.sleep(0.5)
        raise RuntimeError(f"the page was not up after {STARTUP_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def get(self, path: str) -> tuple[int, bytes]:
        import urllib.error
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
        try:
            with opener.open(self.url + path, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read()

    def stop(self) -> int:
        """SIGTERM to the whole group (the page removes its files), then SIGKILL if it lingers."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout=30)

    def rss(self) -> int:
        """Resident memory of the server: its process and any children."""
        import psutil

        process = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


@contextlib.contextmanager
def open_chromium(viewport: tuple[int, int] = (1280, 900)) -> Iterator[object]:
    """A Playwright browser context on Debian's Chromium (Playwright's own download is not used),
    headless, with a fresh profile that is removed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="seesr-chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=list(CHROMIUM_FLAGS), headless=True, accept_downloads=True,
            viewport={"width": viewport[0], "height": viewport[1]},
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()


def set_setting(page, name: str, value: str) -> None:
    """Pick ``value`` from a setting's dropdown (a setting with choices), else type it into its box."""
    from seesr.settings.declare import setting_info

    control = page.locator(f"#setting-{name}")
    if setting_info(name).choices:
        control.locator("input").first.click()
        page.get_by_role("option", name=value, exact=True).click()
    else:
        control.locator("input, textarea").first.fill(value)


@contextlib.contextmanager
def page_runner(
    image: Path, settings: dict[str, str], weights: Path | None
) -> Iterator[Callable[[], tuple[float, float]]]:
    """``seesr ui`` in Chromium with ``image`` uploaded and ``settings`` set; yields a function that
    clicks Upscale and returns the seconds until the page says Done with the slider shown, and the
    seconds of the ``Upscaler.upscale`` call in the server that the page reports for the run."""
    from playwright.sync_api import expect

    command = [sys.executable, "-m", "seesr.cli", "ui", "--device", "cpu"]
    command += ["--weights", str(weights)] if weights else []
    with tempfile.TemporaryDirectory(prefix="seesr-ui-bench-") as root, open_chromium() as browser:
        server = PageServer(command, Path(root))
        try:
            page = browser.new_page()
            page.goto(server.url)
            page.locator("#input-image input[type=file]").set_input_files(str(image))
            page.get_by_text("Advanced", exact=True).click()
            for name, value in settings.items():
                set_setting(page, name, value)
            expect(page.locator("#plan")).to_contain_text("->", timeout=60_000)

            def click() -> tuple[float, float]:
                start = time.perf_counter()
                page.click("#upscale-button")
                expect(page.locator("#status")).not_to_contain_text("Done", timeout=60_000)  # the last run's words went
                page.wait_for_function(RESULT_SHOWN, polling=POLL_MS, timeout=3_600_000)
                clicked = time.perf_counter() - start
                return clicked, float(re.search(r" in ([\d.]+) s", page.locator("#status").inner_text()).group(1))

            yield click
        finally:
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--weights", type=Path, help="weights directory (default: weights/ or $SEESR_WEIGHTS)")
    parser.add_argument("--model", default="realesrgan-x4plus")
    parser.add_argument("--scale", default="4")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from seesr.api import Upscaler

    settings = {"model": args.model, "scale": args.scale}
    upscaler = Upscaler(args.weights, device="cpu")
    api, page, inside = [], [], []
    with page_runner(args.image.resolve(), settings, args.weights) as click:
        upscaler.upscale(args.image, **settings)  # warm-up of both
        click()
        for _ in range(args.repeats):  # alternately, so that a busy neighbour slows both alike
            start = time.perf_counter()
            upscaler.upscale(args.image, **settings)
            api.append(time.perf_counter() - start)
            clicked, upscaled = click()
            page.append(clicked)
            inside.append(upscaled)
    cpu, flags = cpu_description()
    added = [clicked - upscaled for clicked, upscaled in zip(page, inside)]
    print(f"machine: {cpu} ({', '.join(flags) or 'no avx512/amx flags'}), {os.cpu_count()} threads")
    chosen = ", ".join(f"{k} {v}" for k, v in settings.items())
    print(f"image: {args.image.name}, {chosen}, {args.repeats} runs each after a warm-up")
    print(f"API (Upscaler.upscale in this process): best {min(api):.2f} s, median {statistics.median(api):.2f} s "
          f"({_seconds(api)})")
    print(f"page (click to result): best {min(page):.2f} s, median {statistics.median(page):.2f} s ({_seconds(page)})")
    print(f"page runs' Upscaler.upscale in the server: median {statistics.median(inside):.2f} s ({_seconds(inside)})")
    print(f"page overhead: best against best {100 * (min(page) / min(api) - 1):+.1f} %; added per run, median "
          f"{statistics.median(added):.2f} s = {100 * statistics.median(a / u for a, u in zip(added, inside)):+.1f} % "
          "of its upscale")
    return 0


def _seconds(times: Sequence[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times)


if __name__ == "__main__":
    raise SystemExit(main())
