"""The web page without a browser: its controls are the declaration, its API names the settings,
and the service behind it plans, runs, cancels and bundles as the library does (tiny weights, CPU)."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import ExifTags, Image

from seesr.settings import declare, fields
from seesr.api import Upscaler
from seesr.errors import Cancelled, ConfigError, InputError
from seesr.progress import StageProgress
from seesr.ui import build_app
from seesr.ui.controls import SWITCH_CHOICES, UNSET, page_settings, setting_arguments
from seesr.ui.page import api_endpoint, done_text, escape, plan_text, report_text
from seesr.ui.service import PageService

FAST = dict(scale="2", steps="1", process_size="0", seed="3")  # as the page sends them: text


@pytest.fixture(scope="module")
def upscaler(tiny_weights):
    return Upscaler(tiny_weights, device="cpu")


@pytest.fixture()
def service(upscaler, tmp_path):
    return PageService(upscaler, tmp_path / "work")


@pytest.fixture()
def photo(tmp_path, lr_image) -> Path:
    path = tmp_path / "photo.png"
    lr_image.save(path)
    return path


def gr_page_folder() -> Path:
    import seesr.ui

    return Path(seesr.ui.__file__).parent


def controls_of(app: gr.Blocks) -> dict:
    return app.seesr_controls


def test_the_pages_controls_are_the_declaration(upscaler):
    controls = controls_of(build_app(upscaler))
    assert not list(Path(gr_page_folder()).glob("*.pyi"))  # building the page writes nothing beside it
    assert tuple(controls) == page_settings() == declare.settings_in_scope("image")
    servers = declare.settings_in_scope("process") + declare.settings_in_scope("naming")
    assert set(declare.DECLARED) - set(controls) == set(servers)
    assert {"device", "dtype", "suffix"}.isdisjoint(controls)  # the server's, not a request's
    for name, control in controls.items():
        info, (kind, _) = declare.setting_info(name), declare.value_kind(name)
        assert control.info == declare.describe(name) and control.elem_id == f"setting-{name}"
        if info.choices:
            assert isinstance(control, gr.Dropdown)
            assert [value for _, value in control.choices] == [UNSET, *info.choices]
            assert control.value == UNSET
        elif kind is bool:
            assert isinstance(control, gr.Radio) and [v for _, v in control.choices] == list(SWITCH_CHOICES)
            assert control.value == UNSET
        else:
            assert isinstance(control, gr.Textbox) and control.value == "" and control.placeholder == UNSET


def test_a_new_setting_gets_a_control_and_an_api_parameter_without_ui_code(upscaler, monkeypatch):
    knob = dataclasses.field(default=3, metadata={"setting": fields.Setting("A new knob.", range=(1, 9))})
    knob.name, knob.type = "new_knob", "int"
    monkeypatch.setitem(declare.DECLARED, "new_knob", knob)
    app = build_app(upscaler)
    assert controls_of(app)["new_knob"].info == "A new knob. Default: 3. Range: 1 to 9."
    parameters = app.get_api_info()["named_endpoints"]["/upscale"]["parameters"]
    assert parameters[-1]["parameter_name"] == "new_knob" and parameters[-1]["parameter_has_default"]


def test_the_api_endpoint_takes_the_image_and_every_page_setting_by_name(upscaler):
    api = build_app(upscaler).get_api_info()["named_endpoints"]
    assert list(api) == ["/upscale"]  # the page's own events are private
    parameters = api["/upscale"]["parameters"]
    assert [p["parameter_name"] for p in parameters] == ["image", *page_settings()]
    assert not parameters[0]["parameter_has_default"] and all(p["parameter_has_default"] for p in parameters[1:])


def test_only_the_settings_a_person_set_are_sent():
    values = {"preset": UNSET, "scale": " ", "steps": "4", "offload": "on", "prompt": "", "seed": None, "quality": "90"}
    assert setting_arguments(values) == {"steps": "4", "offload": "on", "quality": "90"}


def test_the_plan_is_the_dry_run(service, photo, upscaler):
    plan = service.plan(photo, {"scale": "2", "process_size": "0"})
    assert plan.input_size == (36, 24) and plan.output_size == (72, 48)
    assert plan == upscaler.dry_run(photo, scale=2, process_size=0)
    assert plan.start.engine == "seesr" and plan.estimated_peak_bytes > 0
    text = plan_text(plan)
    assert text.startswith("**36x24 -> 72x48**") and "seesr" in text and "estimated peak memory" in text
    realesrgan = service.plan(photo, {"model": "realesrgan-x4plus", "scale": "3"})
    assert realesrgan.start.engine == "realesrgan" and realesrgan.output_size == (108, 72)


def test_a_run_gives_the_slider_pair_and_the_download_in_the_chosen_format(service, photo):
    done = service.upscale(photo, {**FAST, "output_format": "jpg", "quality": "80"}, "session")
    assert done.result.engine == "seesr" and done.result.seed == 3
    with Image.open(done.before) as before, Image.open(done.after) as after:
        assert before.format == after.format == "PNG" and before.size == after.size == (72, 48)
        expected = np.asarray(done.result.source.rgb.resize((72, 48), Image.Resampling.BICUBIC))
        assert np.array_equal(np.asarray(before), expected)  # left: the input, bicubic, at the output size
        assert np.array_equal(np.asarray(after), np.asarray(done.result.image))  # right: the output, lossless
    download = done.download()
    with Image.open(download) as written:
        assert written.format == "JPEG" and written.size == (72, 48)
    assert download.name == "photo_seesr.jpg" and service.workdir in download.parents
    assert "seed: 3" in report_text(done.result) and "timings: " in report_text(done.result)


def test_several_samples_give_different_images_with_their_seeds_and_a_zip_of_named_files(service, photo):
    done = service.upscale(photo, {**FAST, "num_samples": "2"}, "session")
    assert done.seeds == [3, 4] and len(done.afters) == 2 and done.result is done.samples[0]
    shown = [np.asarray(Image.open(after)) for after in done.afters]
    assert shown[0].shape == shown[1].shape == (48, 72, 3) and not np.array_equal(shown[0], shown[1])
    assert np.array_equal(shown[1], np.asarray(done.samples[1].image))
    assert done_text(done).startswith("Done: 2 samples of 72x48 (seeds 3, 4) in ")
    download = done.download()
    assert download.name == "photo_seesr.zip" and service.workdir in download.parents
    with zipfile.ZipFile(download) as bundle:
        assert bundle.namelist() == ["photo_seesr_s3.png", "photo_seesr_s4.png"]
        for name, sample in zip(bundle.namelist(), done.samples):
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(bundle.read(name)))), np.asarray(sample.image))
    names = ["scale", "steps", "process_size", "seed", "num_samples"]
    first = Path(api_endpoint(service, names)(str(photo), "2", "1", "0", "3", "2"))  # /upscale: the first sample
    assert first.name == "photo_seesr_s3.png" and np.array_equal(np.asarray(Image.open(first)), shown[0])


def test_one_sample_is_one_file_and_a_random_seed_is_the_one_shown(service, photo):
    done = service.upscale(photo, {**FAST, "seed": ""}, "session")
    assert len(done.samples) == 1 and isinstance(done.result.seed, int)
    assert done.download().name == "photo_seesr.png" and done_text(done).startswith("Done: 72x48 in ")
    assert f"seed: {done.result.seed}" in report_text(done.result)


def test_when_realesrgan_stands_in_its_one_image_is_shown_once(photo, tmp_path):
    service = PageService(Upscaler(tmp_path / "no-weights", device="cpu"), tmp_path / "work")
    done = service.upscale(photo, {**FAST, "num_samples": "3"}, "s")  # SeeSR's weights are missing
    assert done.result.engine == "realesrgan" and done.seeds == [None] and len(done.afters) == 1
    assert done.download().name == "photo_seesr.png" and done_text(done).startswith("Done: 72x48 in ")
    assert "Real-ESRGAN stood in for SeeSR" in report_text(done.result)


def test_downloads_keep_the_inputs_metadata_unless_strip_metadata_is_on(service, photo, tmp_path):
    camera = tmp_path / "camera.jpg"
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Canon"
    Image.open(photo).save(camera, quality=95, exif=exif, dpi=(300, 300))
    with zipfile.ZipFile(service.upscale(camera, {**FAST, "num_samples": "2"}, "s").download()) as bundle:
        assert bundle.namelist() == ["camera_seesr_s3.png", "camera_seesr_s4.png"]
        for name in bundle.namelist():
            with Image.open(io.BytesIO(bundle.read(name))) as sample:
                assert sample.getexif()[ExifTags.Base.Make] == "Canon"
                assert sample.info["dpi"] == pytest.approx((600, 600), abs=0.01)  # 300 dpi, upscaled x2
    stripped = service.batch([camera], {**FAST, "model": "realesrgan-x4plus", "strip_metadata": "on"}, "s")
    with zipfile.ZipFile(stripped.archive) as bundle, Image.open(io.BytesIO(bundle.read("camera_seesr.png"))) as out:
        assert out.size == (72, 48) and not out.getexif() and "dpi" not in out.info


def test_a_width_sets_the_plan_and_the_output_size(service, photo):
    plan = service.plan(photo, {"width": "100", "process_size": "0"})
    assert plan.output_size == (100, 67) and plan_text(plan).startswith("**36x24 -> 100x67**")
    done = service.upscale(photo, {"width": "100", "steps": "1", "process_size": "0", "seed": "3"}, "s")
    with Image.open(done.after) as after, Image.open(done.download()) as written:
        assert after.size == written.size == (100, 67)
    with pytest.raises(ConfigError, match="exclude each other"):
        service.plan(photo, {"width": "100", "scale": "2"})


def test_the_only_downloads_are_the_results_own_files(upscaler):
    """The slider and the samples gallery show lossless copies: only the Download buttons (written by
    Result.save, in the chosen format, with or without metadata) offer a file."""
    shown = {block.elem_id: block for block in build_app(upscaler).blocks.values() if block.elem_id}
    assert shown["result-slider"].buttons == shown["samples-gallery"].buttons == ["fullscreen"]


@pytest.mark.parametrize(
    "data, says",
    [
        (b"", "empty (0 bytes)"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "cannot read image data as an image"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "not an image file Pillow can read"),
    ],
)
def test_bad_input_is_one_line_and_the_service_stays_healthy(service, photo, tmp_path, data, says):
    bad = tmp_path / "bad.png"
    bad.write_bytes(data)
    for call in (lambda: service.plan(bad, {}), lambda: service.upscale(bad, FAST, "s")):
        with pytest.raises(InputError) as refused:
            call()
        assert says in str(refused.value) and "\n" not in str(refused.value) and str(bad) not in str(refused.value)
    assert not service.lock.locked()
    assert Image.open(service.upscale(photo, FAST, "s").after).size == (72, 48)


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(service, tmp_path):
    big = tmp_path / "big.png"
    Image.new("1", (4100, 4100)).save(big)  # 16.8 MP in a few KB
    for call in (lambda: service.plan(big, {}), lambda: service.upscale(big, FAST, "s")):
        with pytest.raises(InputError, match=r"image data is 4100x4100 = 16.8 MP, above the 16.8 MP input limit"):
            call()


def test_a_refused_setting_is_said_before_the_run_waits(service, photo):
    service.lock.acquire()  # another run holds the Upscaler
    try:
        with pytest.raises(ConfigError, match=r"scale=20.0 \(allowed: 1.0 to 8.0\)"):
            service.upscale(photo, {"scale": "20"}, "s")
    finally:
        service.lock.release()


def test_cancel_stops_the_sessions_run_and_the_next_run_is_unchanged(service, photo, upscaler):
    def cancel_in_denoise(event) -> None:
        if isinstance(event, StageProgress) and event.stage == "denoise" and event.total:
            assert service.cancel("other") is False  # another session's Cancel stops nothing
            assert service.cancel("mine") is True

    with pytest.raises(Cancelled):
        service.upscale(photo, {**FAST, "steps": "2"}, "mine", cancel_in_denoise)
    assert not service.lock.locked() and service.cancel("mine") is False and upscaler.progress is None
    again = service.upscale(photo, {**FAST, "steps": "2"}, "mine")
    fresh_service = PageService(Upscaler(upscaler.weights, device="cpu"), service.workdir)
    fresh = fresh_service.upscale(photo, {**FAST, "steps": "2"}, "x")
    assert np.array_equal(np.asarray(Image.open(again.after)), np.asarray(Image.open(fresh.after)))


def test_cancel_stops_a_run_asked_for_before_it_starts(service, photo):
    service.ask("mine")  # the click: the run waits in the queue
    assert service.cancel("mine") is True
    events: list = []
    with pytest.raises(Cancelled):
        service.upscale(photo, FAST, "mine", events.append)
    assert events == [] and not service.lock.locked()  # stopped before any work
    assert service.cancel("mine") is False
    assert Image.open(service.upscale(photo, FAST, "mine").after).size == (72, 48)  # the next click runs


def test_a_batch_does_every_good_image_names_each_bad_one_and_zips_the_outputs(service, photo, tmp_path):
    other = tmp_path / "other" / "photo.png"  # the same name as the first: its zip entry gets _2
    other.parent.mkdir()
    Image.open(photo).rotate(90, expand=True).save(other)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    names: list[str] = []
    done = service.batch([photo, broken, other], {**FAST, "model": "realesrgan-x4plus"}, "s",
                         lambda index, name: names.append(f"{index}:{name}"))  # fmt: skip
    assert names == ["0:photo.png", "1:broken.jpg", "2:photo.png"]
    assert [name for name, _, _ in done.done] == ["photo.png", "photo.png"]
    assert [upscaled.seeds for _, upscaled, _ in done.done] == [[None], [None]]
    assert done.failed[0][0] == "broken.jpg" and "broken" not in done.failed[0][1].split(":")[0]
    with zipfile.ZipFile(done.archive) as bundle:
        assert bundle.namelist() == ["photo_seesr.png", "photo_seesr_2.png"]
        sizes = [Image.open(io.BytesIO(bundle.read(n))).size for n in bundle.namelist()]
    assert sizes == [(72, 48), (48, 72)]


def test_a_batch_zips_every_sample_of_every_image(service, photo, tmp_path):
    other = tmp_path / "other.png"
    Image.open(photo).rotate(90, expand=True).save(other)
    done = service.batch([photo, other], {**FAST, "num_samples": "2"}, "s")
    assert [(name, upscaled.seeds) for name, upscaled, _ in done.done] == [("photo.png", [3, 4]), ("other.png", [3, 4])]
    with zipfile.ZipFile(done.archive) as bundle:
        assert bundle.namelist() == [f"{stem}_seesr_s{seed}.png" for stem in ("photo", "other") for seed in (3, 4)]
        sizes = [Image.open(io.BytesIO(bundle.read(n))).size for n in bundle.namelist()]
    assert sizes == [(72, 48)] * 2 + [(48, 72)] * 2


def test_words_on_the_page_are_shown_as_written():
    assert escape("a_b *c* [d](e) <b>") == r"a\_b \*c\* \[d\]\(e\) \<b\>"


def test_naming_the_ui_command_imports_neither_gradio_nor_torch(tmp_path):
    script = """
import sys, contextlib, io
import seesr.cli
with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
    seesr.cli.main(["ui", "--help"])
assert "--queue-size" in out.getvalue() and "--device" in out.getvalue() and "--steps" not in out.getvalue()
print(sorted(m for m in ("gradio", "torch") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "[]"


def test_requests_queue_one_at_a_time_in_a_bounded_queue(upscaler):
    app = build_app(upscaler, queue_size=3)
    assert app._queue.max_size == 3 and app._queue.default_concurrency_limit == 1
    runs = [fn for fn in app.fns.values() if fn.concurrency_id == "upscaler"]
    assert {fn.name for fn in runs} == {"upscale_on_page", "batch", "upscale"}  # the page's run, the batch, /upscale
    assert all(fn.concurrency_limit == 1 for fn in runs)


def test_the_readme_shows_the_pages_screenshot():
    root = Path(__file__).resolve().parents[1]
    shot = root / "docs" / "web-page.png"
    assert "](docs/web-page.png)" in (root / "README.md").read_text()
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (1280, 900)
    assert shot.stat().st_size < 200_000


def test_serve_refuses_an_empty_queue_and_a_device_this_machine_lacks_before_it_listens(tiny_weights_dir):
    from seesr.ui.server import serve

    with pytest.raises(ConfigError, match="--queue-size must be 1 or more, got 0"):
        serve(weights=tiny_weights_dir, queue_size=0)
    with pytest.raises(ConfigError, match="cuda:7"):
        serve(weights=tiny_weights_dir, device="cuda:7")
