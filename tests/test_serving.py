"""The README's "Serving and scaling" commands that are not Cog's or a scheduler's: the web page
behind a reverse proxy (``GRADIO_ROOT_PATH=/seesr ./start_seesr.sh ui --port 7860``), as typed.
Cog is in tests/test_cog.py, the folder across machines in tests/test_shards.py."""

from __future__ import annotations

import json
import os

import pytest
from conftest import REPO_ROOT
from tiny_layout import lay_out_tiny_weights

from benchmarks.ui import PageServer


@pytest.mark.slow
def test_the_page_behind_a_proxy_serves_itself_under_its_path(tiny, tmp_path):
    """With ``GRADIO_ROOT_PATH=/seesr`` the page tells the browser and API clients to reach it at
    ``.../seesr``: what a proxy forwarding ``/seesr/`` to the page needs."""
    weights = lay_out_tiny_weights(tiny, tmp_path / "weights")
    command = ["env", "GRADIO_ROOT_PATH=/seesr", str(REPO_ROOT / "start_seesr.sh"), "ui", "--weights", str(weights),
               "--device", "cpu"]  # fmt: skip
    try:
        page = PageServer(command, tmp_path, {**os.environ, "OMP_NUM_THREADS": "2"})
    except RuntimeError as failure:
        pytest.fail(str(failure))
    try:
        status, body = page.get("/config")
        assert status == 200 and json.loads(body)["root"] == f"{page.url}/seesr"
        status, html = page.get("/")
        assert status == 200 and f'"root":"{page.url}/seesr"'.encode() in html
    finally:
        page.stop()
