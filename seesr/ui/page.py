"""The web page (Gradio Blocks): what a person sees and clicks, wired to :class:`~seesr.ui.service.PageService`.

One image: upload (click, drop or paste), the dry-run plan as soon as it is there, Upscale and
Cancel, a before/after slider, the result's report and a download in the chosen format; with
``num_samples`` above 1, a gallery of the samples (a click puts one in the slider) and a zip of
them all. Several images: many uploads, a gallery, one zip. The settings below them are generated
from the declaration (:mod:`seesr.ui.controls`). ``/upscale`` is the same run as a named API
endpoint: ``image`` plus the settings by their declared names, returning the (first) output image.
Every file offered for download is a :meth:`~seesr.api.Result.save` output; the slider and the
samples gallery show lossless copies, so they offer no download of their own.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
import uuid
from typing import Any, Callable

import gradio as gr

from seesr.settings import declare
from seesr.api import DryRun, Result
from seesr.errors import Cancelled, SeesrError
from seesr.progress import ProgressCallback, ProgressTimes, RunStart
from seesr.ui.controls import page_settings, setting_arguments, setting_control
from seesr.ui.service import RESULT_MAX_AGE, BatchDone, PageService, Upscaled, message

logger = logging.getLogger(__name__)

MAIN_SETTINGS = ("preset", "model", "scale", "seed")
"""Settings shown first; the others go under Prompts, Output file or Advanced."""
PROMPT_SETTINGS = ("prompt", "positive_prompt", "negative_prompt")
OUTPUT_SETTINGS = ("output_format", "quality")
RUN_GROUP = "upscaler"
"""The concurrency group of every event that runs the Upscaler: one at a time, in queue order."""


def sent_image(**options: Any) -> gr.Image:
    """An image upload that reaches seesr as the path of the file the browser sent, undecoded, so
    that seesr's reader checks its bytes and pixels before anything decodes it (Gradio's Image
    opens it first). Its preprocessing is replaced on the instance: a subclass of a Gradio
    component would make Gradio write a ``.pyi`` stub beside this module."""
    image = gr.Image(type="filepath", image_mode=None, **options)
    image.preprocess = lambda payload: None if payload is None else payload.path
    return image


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
            image = sent_image(label="image", sources=["upload", "clipboard"], elem_id="input-image")
            plan = gr.Markdown("Drop an image to see what will run.", elem_id="plan")
        with gr.Column():
            slider = gr.ImageSlider(label="before (bicubic) / after", type="filepath", buttons=["fullscreen"],
                                    elem_id="result-slider")  # fmt: skip
            samples = gr.Gallery(label="samples (click one to compare it)", columns=4, buttons=["fullscreen"],
                                 visible=False, elem_id="samples-gallery")  # fmt: skip
            with gr.Row():
                run = gr.Button("Upscale", variant="primary", elem_id="upscale-button")
                cancel = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
            status = gr.Markdown(elem_id="status")
            download = gr.DownloadButton("Download", value=None, visible=False, elem_id="download-button")
            report = gr.Markdown(elem_id="report")
    api_trigger = gr.Button(visible=False)
    api_output = gr.Image(visible=False, type="filepath", label="output")
    return dict(image=image, plan=plan, slider=slider, samples=samples, run=run, cancel=cancel, status=status,
                download=download, report=report, api_trigger=api_trigger, api_output=api_output)  # fmt: skip


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
        random_seed = gr.Checkbox(
            True, label="random seed", info="the seed used is shown after the run", elem_id="random-seed"
        )
    with gr.Accordion("Prompts (SeeSR)", open=False):
        place(PROMPT_SETTINGS)
    with gr.Accordion("Output file", open=False):
        with gr.Row():
            place(OUTPUT_SETTINGS)
    with gr.Accordion("Advanced", open=False):
        rest = [n for n in names if n not in controls]
        for engines in dict.fromkeys(declare.setting_info(n).engines for n in rest):
            gr.Markdown(f"### {' and '.join(engines)}" if len(engines) == 1 else "### every engine")
            place(tuple(n for n in rest if declare.setting_info(n).engines == engines))
    return {name: controls[name] for name in names}, random_seed


# ---------------------------------------------------------------------------- events
class _Settings:
    """The setting controls of the page and how their values become an Upscaler's arguments."""

    def __init__(self, controls: dict[str, gr.components.Component], random_seed: gr.Checkbox) -> None:
        self.controls, self.random_seed = controls, random_seed
        self.names = {component: name for name, component in controls.items()}

    def inputs(self, *components: gr.components.Component) -> set:
        """An event's inputs: ``components``, the random-seed switch and every control."""
        return {*components, self.random_seed, *self.controls.values()}

    def arguments(self, values: dict) -> dict[str, Any]:
        """The settings a person set; no seed while "random seed" is on."""
        chosen = setting_arguments({self.names[c]: v for c, v in values.items() if c in self.names})
        if values[self.random_seed]:
            chosen.pop("seed", None)
        return chosen


def _wire(service: PageService, one: dict, several: dict, controls: dict, random_seed: gr.Checkbox) -> None:
    settings = _Settings(controls, random_seed)
    _wire_plan(service, one, settings)
    _wire_one_image(service, one, settings)
    _wire_several_images(service, several, settings)

    def cancel(request: gr.Request) -> str:
        return "Cancelling..." if service.cancel(_session(request)) else "Nothing is running."

    for tab in (one, several):  # the run itself says "Cancelled after ..." as it stops
        tab["cancel"].click(cancel, outputs=tab["status"], queue=False, api_visibility="private")
    one["api_trigger"].click(
        api_endpoint(service, list(controls)), inputs=[one["image"], *controls.values()], outputs=one["api_output"],
        api_name="upscale", concurrency_id=RUN_GROUP, concurrency_limit=1,
    )  # fmt: skip


def _wire_plan(service: PageService, one: dict, settings: _Settings) -> None:
    """The dry-run plan, again whenever the image or a setting that can change it changes."""

    def plan(values: dict) -> str:
        image = values[one["image"]]
        if image is None:
            return "Drop an image to see what will run."
        try:
            return plan_text(service.plan(image, settings.arguments(values)))
        except SeesrError as error:
            return warning(message(error))

    def changes_plans(name: str) -> bool:  # the prompts (free text) do not
        return declare.value_kind(name)[0] is not str or bool(declare.setting_info(name).choices)

    triggers = [one["image"].change, *(c.change for name, c in settings.controls.items() if changes_plans(name))]
    gr.on(triggers, plan, inputs=settings.inputs(one["image"]), outputs=one["plan"], show_progress="hidden",
          trigger_mode="always_last", concurrency_id="plan", concurrency_limit=2, api_visibility="private")  # fmt: skip


def _wire_one_image(service: PageService, one: dict, settings: _Settings) -> None:
    """Upscale: the slider (first sample), the samples gallery when there are several, the status
    line, the report and the (first) seed used; then the download is written (in the chosen
    format; a zip of every sample when there are several) and offered, after the result is on the
    page. A click on a sample puts it in the slider."""
    seed = settings.controls.get("seed")
    made = gr.State(None, time_to_live=RESULT_MAX_AGE)  # the result until its download is written
    shown = gr.State(None, time_to_live=RESULT_MAX_AGE)  # the slider's before and every sample's after

    def upscale_on_page(values: dict, request: gr.Request, progress: gr.Progress = gr.Progress()) -> tuple:
        seed_shown = values[seed] if seed is not None else None
        if values[one["image"]] is None:
            return None, _no_samples(), warning("Drop an image first."), "", seed_shown, None, None
        done, failure = _attempt(lambda: service.upscale(values[one["image"]], settings.arguments(values),
                                                         _session(request), page_progress(progress)))  # fmt: skip
        if failure is not None:
            return None, _no_samples(), failure, "", seed_shown, None, None
        used = str(done.result.seed) if done.result.seed is not None else seed_shown
        gallery = gr.update(value=[(str(after), f"seed {used_by}") for after, used_by in zip(done.afters, done.seeds)],
                            visible=len(done.samples) > 1)  # fmt: skip
        pair = (str(done.before), str(done.after))
        return pair, gallery, done_text(done), report_text(done.result), used, done, (pair[0], *map(str, done.afters))

    def compare_sample(files: tuple[str, ...] | None, selected: gr.SelectData) -> Any:
        return gr.skip() if files is None else (files[0], files[1 + selected.index])

    def offer_download(done: Upscaled | None) -> tuple:
        if done is None:
            return gr.update(visible=False), None
        path, failure = _attempt(done.download)
        if failure is not None:
            return gr.update(visible=False), None
        return gr.update(value=str(path), label=f"Download {path.name}", visible=True), None

    def asked(request: gr.Request) -> tuple:  # at once: Cancel applies, the last result's words go
        service.ask(_session(request))
        return "", "", gr.update(visible=False), _no_samples(), None

    one["run"].click(asked, outputs=[one["status"], one["report"], one["download"], one["samples"], shown],
                     queue=False, api_visibility="private")  # fmt: skip
    outputs = [one["slider"], one["samples"], one["status"], one["report"], seed if seed is not None else one["report"],
               made, shown]  # fmt: skip
    run = one["run"].click(upscale_on_page, inputs=settings.inputs(one["image"]), outputs=outputs,
                           show_progress_on=one["slider"],  # one progress bar: each one costs the browser CPU
                           concurrency_id=RUN_GROUP, concurrency_limit=1, api_visibility="private")  # fmt: skip
    run.then(offer_download, inputs=made, outputs=[one["download"], made], concurrency_id="download",
             concurrency_limit=2, api_visibility="private")  # fmt: skip
    one["samples"].select(compare_sample, inputs=shown, outputs=one["slider"], queue=False, show_progress="hidden",
                          api_visibility="private")  # fmt: skip


def _no_samples() -> Any:
    return gr.update(value=None, visible=False)


def _wire_several_images(service: PageService, several: dict, settings: _Settings) -> None:
    """Upscale all: the gallery, the status (with each file that failed) and the zip."""

    def batch(values: dict, request: gr.Request, progress: gr.Progress = gr.Progress()) -> tuple:
        files = values[several["files"]] or []
        if not files:
            return [], warning("Add some images first."), gr.update(visible=False)

        def image_progress(index: int, name: str) -> ProgressCallback:
            return page_progress(progress, f"image {index + 1}/{len(files)} ({name}): ")

        arguments = settings.arguments(values)
        done, failure = _attempt(lambda: service.batch(files, arguments, _session(request), image_progress))
        if failure is not None:
            return [], failure, gr.update(visible=False)
        archive = gr.update(value=str(done.archive), visible=True) if done.archive else gr.update(visible=False)
        gallery = [(str(path), _caption(name, upscaled.seeds, index)) for name, upscaled, written in done.done
                   for index, path in enumerate(written)]  # fmt: skip
        return gallery, batch_text(done), archive

    def asked(request: gr.Request) -> tuple:  # at once: Cancel applies, the last result's words go
        service.ask(_session(request))
        return "", gr.update(visible=False)

    several["run"].click(asked, outputs=[several["status"], several["archive"]], queue=False,
                         api_visibility="private")  # fmt: skip
    outputs = [several["gallery"], several["status"], several["archive"]]
    several["run"].click(batch, inputs=settings.inputs(several["files"]), outputs=outputs,
                         show_progress_on=several["gallery"],
                         concurrency_id=RUN_GROUP, concurrency_limit=1, api_visibility="private")  # fmt: skip


def _attempt(run: Callable[[], Any]) -> tuple[Any, str | None]:
    """``(run(), None)``, or ``(None, the line the page says)`` when it was cancelled or refused."""
    started = time.monotonic()
    try:
        return run(), None
    except Cancelled:
        return None, f"Cancelled after {time.monotonic() - started:.0f} s; nothing was produced."
    except Exception as error:  # noqa: BLE001 - one line on the page; a bug's traceback goes to the log
        _log_unexpected(error)
        return None, warning(message(error))


def api_endpoint(service: PageService, names: list[str]) -> Callable[..., str]:
    """``/upscale(image, <setting>=..., ...)``: the output image in the chosen format. Its signature
    names the settings as declared (what ``gradio_client`` calls them), each optional. It returns
    one image whatever ``num_samples`` is: the first sample (seed ``seed``, named
    ``NAME_s<seed>.EXT``); a client that wants sample k calls it again with ``seed + k``."""

    def upscale(image: str | None, *values: Any) -> str:
        if image is None:
            raise gr.Error("send an image (gradio_client.handle_file(path))")
        try:
            done = service.upscale(image, setting_arguments(dict(zip(names, values))), f"api-{uuid.uuid4().hex}")
            return str(done.file())
        except Exception as error:  # noqa: BLE001 - the client gets the one line
            _log_unexpected(error)
            raise gr.Error(message(error)) from None

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
        f"- engine: {escape(start.engine)} ({escape(start.model)}), "
        f"{escape(start.device)} {escape(start.dtype)}{steps}",
        f"- tiles: {escape(start.tiles)}",
        f"- estimated peak memory: {_gib(plan.estimated_peak_bytes)}",
    ]
    if plan.fallback_reason:
        lines.append(f"- Real-ESRGAN stands in: {escape(plan.fallback_reason)}")
    return "\n".join(lines)


def done_text(done: Upscaled) -> str:
    """The status line of a finished run: the output's size, the upscale's wall time, and with
    several samples their number and seeds."""
    width, height = done.result.image.size
    if len(done.samples) == 1:
        return f"Done: {width}x{height} in {done.seconds:.2f} s."
    seeds = ", ".join(str(seed) for seed in done.seeds)
    return f"Done: {len(done.samples)} samples of {width}x{height} (seeds {seeds}) in {done.seconds:.2f} s."


def _caption(name: str, seeds: list[int | None], index: int) -> str:
    """A gallery caption: the input's file name, with the sample's seed when it has several."""
    return name if len(seeds) == 1 else f"{name}, seed {seeds[index]}"


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

