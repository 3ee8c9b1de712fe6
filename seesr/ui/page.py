"""The web page (Gradio Blocks): what a person sees and clicks, wired to :class:`~seesr.ui.service.PageService`.

One image: upload (click, drop or paste), the dry-run plan as soon as it is there, Upscale and
Cancel, a before/after slider, the result's report and a download in the chosen format. Several
images: many uploads, a gallery, one zip. The settings below them are generated from the
declaration (:mod:`seesr.ui.controls`). ``/upscale`` is the same run as a named API endpoint:
``image`` plus the settings by their declared names, returning the output image.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
import uuid
from typing import Any, Callable

import gradio as gr

from seesr import presets
from seesr.api import DryRun, Result
from seesr.errors import Cancelled, SeesrError
from seesr.progress import ProgressCallback, ProgressTimes, RunStart
from seesr.ui.controls import page_settings, setting_arguments, setting_control
from seesr.ui.service import BatchDone, PageService, message

logger = logging.getLogger(__name__)

MAIN_SETTINGS = ("preset", "model", "scale", "seed")
"""Settings shown first; the others go under Prompts, Output file or Advanced."""
PROMPT_SETTINGS = ("prompt", "positive_prompt", "negative_prompt")
OUTPUT_SETTINGS = ("output_format", "quality")
RUN_GROUP = "upscaler"
"""The concurrency group of every event that runs the Upscaler: one at a time, in queue order."""


class SentImage(gr.Image):
    """An image upload that reaches seesr as the file the browser sent, undecoded, so that seesr's
    reader checks its bytes and pixels before anything decodes it (Gradio's own Image opens it)."""

    def preprocess(self, payload: Any) -> str | None:
        return None if payload is None or payload.path is None else payload.path

    def get_block_name(self) -> str:
        return "image"


def build_page(service: PageService, queue_size: int) -> gr.Blocks:
    """The page over ``service``; requests wait in a queue of at most ``queue_size``."""
    with gr.Blocks(title="seesr", delete_cache=(600, 3600), analytics_enabled=False) as page:
        gr.Markdown(
            "# seesr: super-resolution\n"
            "Drop a photo (or click, or paste), look at the plan, press **Upscale**, then slide to compare. "
            f"One image is upscaled at a time; up to {queue_size} requests wait their turn, and the page shows "
            "your place while you wait."
        )
        with gr.Tabs():
            with gr.Tab("One image"):
                one = _one_image_tab()
            with gr.Tab("Several images"):
                several = _several_images_tab()
        controls, random_seed = _settings_panel()
        _wire(service, one, several, controls, random_seed)
    page.queue(max_size=queue_size, default_concurrency_limit=1)
    page.seesr_controls = controls  # the generated controls, by setting name
    return page


# ---------------------------------------------------------------------------- layout
def _one_image_tab() -> dict[str, Any]:
    with gr.Row():
        with gr.Column():
            image = SentImage(
                label="image", type="filepath", image_mode=None, sources=["upload", "clipboard"], elem_id="input-image"
            )
            plan = gr.Markdown("Drop an image to see what will run.", elem_id="plan")
        with gr.Column():
            slider = gr.ImageSlider(label="before (bicubic) / after", type="pil", format="png", elem_id="result-slider")
            with gr.Row():
                run = gr.Button("Upscale", variant="primary", elem_id="upscale-button")
                cancel = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
            status = gr.Markdown(elem_id="status")
            download = gr.DownloadButton("Download", value=None, visible=False, elem_id="download-button")
            report = gr.Markdown(elem_id="report")
    api_trigger = gr.Button(visible=False)
    api_output = gr.Image(visible=False, type="filepath", label="output")
    return dict(image=image, plan=plan, slider=slider, run=run, cancel=cancel, status=status, download=download,
                report=report, api_trigger=api_trigger, api_output=api_output)  # fmt: skip


def _several_images_tab() -> dict[str, Any]:
    with gr.Row():
        with gr.Column():
            files = gr.File(label="images", file_count="multiple", file_types=["image"], elem_id="batch-files")
        with gr.Column():
            with gr.Row():
                run = gr.Button("Upscale all", variant="primary", elem_id="batch-button")
                cancel = gr.Button("Cancel", variant="stop", elem_id="batch-cancel-button")
            status = gr.Markdown(elem_id="batch-status")
            gallery = gr.Gallery(label="results", columns=4, elem_id="batch-gallery")
            archive = gr.DownloadButton("Download all (zip)", value=None, visible=False, elem_id="batch-download")
    return dict(files=files, run=run, cancel=cancel, status=status, gallery=gallery, archive=archive)


def _settings_panel() -> tuple[dict[str, gr.components.Component], gr.Checkbox]:
    """Every page setting's control (by name) and the "random seed" switch beside the seed."""
    names = page_settings()
    controls: dict[str, gr.components.Component] = {}

    def place(group: tuple[str, ...]) -> None:
        for name in (n for n in group if n in names):
            controls[name] = setting_control(name)

    gr.Markdown("## Settings")
    with gr.Row():
        place(MAIN_SETTINGS)
        random_seed = gr.Checkbox(True, label="random seed", info="the seed used is shown after the run", elem_id="random-seed")
    with gr.Accordion("Prompts (SeeSR)", open=False):
        place(PROMPT_SETTINGS)
    with gr.Accordion("Output file", open=False):
        with gr.Row():
            place(OUTPUT_SETTINGS)
    with gr.Accordion("Advanced", open=False):
        rest = [n for n in names if n not in controls]
        for engines in dict.fromkeys(presets.setting_info(n).engines for n in rest):
            gr.Markdown(f"### {' and '.join(engines)}" if len(engines) == 1 else "### every engine")
            place(tuple(n for n in rest if presets.setting_info(n).engines == engines))
    return {name: controls[name] for name in names}, random_seed


# ---------------------------------------------------------------------------- events
def _wire(service: PageService, one: dict, several: dict, controls: dict, random_seed: gr.Checkbox) -> None:
    names = list(controls)
    by_component = {component: name for name, component in controls.items()}

    def arguments(values: dict, random: bool) -> dict[str, Any]:
        chosen = setting_arguments({by_component[c]: v for c, v in values.items() if c in by_component})
        if random:
            chosen.pop("seed", None)
        return chosen

    def plan(values: dict) -> str:
        image = values[one["image"]]
        if image is None:
            return "Drop an image to see what will run."
        try:
            return plan_text(service.plan(image, arguments(values, values[random_seed])))
        except SeesrError as error:
            return warning(message(error))

    plan_inputs = {one["image"], random_seed, *controls.values()}
    planned = [name for name in names if presets.value_kind(name)[0] is not str or presets.setting_info(name).choices]
    triggers = [one["image"].change, *(controls[name].change for name in planned)]  # prompts change no plan
    gr.on(triggers, plan, inputs=plan_inputs, outputs=one["plan"], show_progress="hidden", trigger_mode="always_last",
          concurrency_id="plan", concurrency_limit=2, api_visibility="private")  # fmt: skip

    def upscale_on_page(values: dict, request: gr.Request, progress: gr.Progress = gr.Progress()) -> tuple:
        image, started = values[one["image"]], time.monotonic()
        seed_box = values[controls["seed"]] if "seed" in controls else None
        if image is None:
            return None, warning("Drop an image first."), gr.update(visible=False), "", seed_box
        try:
            done = service.upscale(image, arguments(values, values[random_seed]), _session(request), page_progress(progress))
        except Cancelled:
            return None, f"Cancelled after {time.monotonic() - started:.0f} s; nothing was produced.", gr.update(visible=False), "", seed_box
        except Exception as error:  # noqa: BLE001 - one line on the page; a bug's traceback goes to the log
            _log_unexpected(error)
            return None, warning(message(error)), gr.update(visible=False), "", seed_box
        used = str(done.result.seed) if done.result.seed is not None else seed_box
        download = gr.update(value=str(done.download), label=f"Download {done.download.name}", visible=True)
        return (done.before, done.after), done_text(done.result), download, report_text(done.result), used

    def cleared(words: int) -> Callable[[], tuple]:
        """Empties ``words`` Markdown outputs and hides a download: the last result goes as a run is asked for."""
        return lambda: ("",) * words + (gr.update(visible=False),)

    one["run"].click(cleared(2), outputs=[one["status"], one["report"], one["download"]], queue=False, api_visibility="private")
    several["run"].click(cleared(1), outputs=[several["status"], several["archive"]], queue=False, api_visibility="private")
    outputs = [one["slider"], one["status"], one["download"], one["report"], controls.get("seed", one["status"])]
    run_event = one["run"].click(upscale_on_page, inputs={one["image"], random_seed, *controls.values()}, outputs=outputs,
                                 concurrency_id=RUN_GROUP, concurrency_limit=1, api_visibility="private")  # fmt: skip

    def batch(values: dict, request: gr.Request, progress: gr.Progress = gr.Progress()) -> tuple:
        files = values[several["files"]] or []
        if not files:
            return [], warning("Add some images first."), gr.update(visible=False)
        started = time.monotonic()

        def image_progress(index: int, name: str) -> ProgressCallback:
            return page_progress(progress, f"image {index + 1}/{len(files)} ({name}): ")

        try:
            done = service.batch(files, arguments(values, values[random_seed]), _session(request), image_progress)
        except Cancelled:
            return [], f"Cancelled after {time.monotonic() - started:.0f} s.", gr.update(visible=False)
        except Exception as error:  # noqa: BLE001
            _log_unexpected(error)
            return [], warning(message(error)), gr.update(visible=False)
        archive = gr.update(value=str(done.archive), visible=True) if done.archive else gr.update(visible=False)
        return [(str(upscaled.download), name) for name, upscaled in done.done], batch_text(done), archive

    batch_event = several["run"].click(
        batch, inputs={several["files"], random_seed, *controls.values()},
        outputs=[several["gallery"], several["status"], several["archive"]], concurrency_id=RUN_GROUP, concurrency_limit=1, api_visibility="private",
    )  # fmt: skip

    def cancel(request: gr.Request) -> str:
        return "Cancelling..." if service.cancel(_session(request)) else "Nothing is running."

    for tab, event in ((one, run_event), (several, batch_event)):
        tab["cancel"].click(cancel, outputs=tab["status"], queue=False, cancels=[event], api_visibility="private")

    one["api_trigger"].click(api_endpoint(service, names), inputs=[one["image"], *controls.values()],
                             outputs=one["api_output"], api_name="upscale", concurrency_id=RUN_GROUP, concurrency_limit=1)  # fmt: skip


def api_endpoint(service: PageService, names: list[str]) -> Callable[..., str]:
    """``/upscale(image, <setting>=..., ...)``: the output image in the chosen format. Its signature
    names the settings as declared (what ``gradio_client`` calls them), each optional."""

    def upscale(image: str | None, *values: Any) -> str:
        if image is None:
            raise gr.Error("send an image (gradio_client.handle_file(path))")
        try:
            done = service.upscale(image, setting_arguments(dict(zip(names, values))), f"api-{uuid.uuid4().hex}")
        except Exception as error:  # noqa: BLE001 - the client gets the one line
            _log_unexpected(error)
            raise gr.Error(message(error)) from None
        return str(done.download)

    image = inspect.Parameter("image", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    settings = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for name in names]
    upscale.__signature__ = inspect.Signature([image, *settings])  # type: ignore[attr-defined]
    return upscale


def page_progress(progress: gr.Progress, prefix: str = "") -> ProgressCallback:
    """``seesr.progress`` events as Gradio's progress bar: the stage, denoising step x tile or
    Real-ESRGAN tile, elapsed time and ETA, as the terminal line says them."""
    times = ProgressTimes()
    times.start_image()

    def report(event: RunStart | Any) -> None:
        times.observe(event)
        if isinstance(event, RunStart):
            progress(None, desc=prefix + event.describe())
        else:
            progress(event.done / event.total if event.total else None, desc=prefix + times.text(event))

    return report


# ---------------------------------------------------------------------------- words
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-!|<>~])")


def escape(text: str) -> str:
    """``text`` shown as written in Markdown."""
    return _MARKDOWN.sub(r"\\\1", text)


def warning(text: str) -> str:
    return f"**Not done:** {escape(text)}"


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def plan_text(plan: DryRun) -> str:
    """The dry-run plan: sizes, engine, tiles, estimated peak memory, and why Real-ESRGAN stands in."""
    (width, height), (out_width, out_height), start = plan.input_size, plan.output_size, plan.start
    steps = f", {start.steps} step{'s' if start.steps != 1 else ''}" if start.steps is not None else ""
    lines = [
        f"**{width}x{height} -> {out_width}x{out_height}**",
        f"- engine: {escape(start.engine)} ({escape(start.model)}), {escape(start.device)} {escape(start.dtype)}{steps}",
        f"- tiles: {escape(start.tiles)}",
        f"- estimated peak memory: {_gib(plan.estimated_peak_bytes)}",
    ]
    if plan.fallback_reason:
        lines.append(f"- Real-ESRGAN stands in: {escape(plan.fallback_reason)}")
    return "\n".join(lines)


def done_text(result: Result) -> str:
    width, height = result.image.size
    return f"Done: {width}x{height} in {result.seconds:.1f} s."


def report_text(result: Result) -> str:
    """What the run did: engine and model, seed, the tags SeeSR read, fidelity, timings, fallback."""
    lines = [f"- engine: {escape(result.engine)}" + (f" ({escape(result.model)})" if result.model else "")]
    if result.seed is not None:
        lines.append(f"- seed: {result.seed}")
    if result.tags:
        lines.append(f"- tags: {escape(result.tags)}")
    if result.fidelity is not None:
        lines.append(f"- fidelity: {escape(result.fidelity.summary())}")
    lines.append("- timings: " + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in result.timings.items()))
    if result.peak_memory_bytes:
        lines.append(f"- peak memory: {_gib(result.peak_memory_bytes)}")
    if result.fallback_reason:
        lines.append(f"- Real-ESRGAN stood in for SeeSR: {escape(result.fallback_reason)}")
    return "\n".join(lines)


def batch_text(done: BatchDone) -> str:
    lines = [f"Done: {len(done.done)} of {len(done.done) + len(done.failed)} images."]
    lines += [f"- {escape(name)}: {escape(reason)}" for name, reason in done.failed]
    return "\n".join(lines)


def _session(request: gr.Request | None) -> str:
    """The browser session a request comes from (what Cancel stops)."""
    return getattr(request, "session_hash", None) or "no-session"


def _log_unexpected(error: BaseException) -> None:
    if not isinstance(error, SeesrError):
        logger.error("unexpected error on the page", exc_info=error)

