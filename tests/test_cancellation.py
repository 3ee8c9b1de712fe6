"""Stopping a run from another thread (``seesr.progress.Cancellation``): it stops at the next step,
nothing falls back, and the Upscaler serves the next image exactly as a fresh one would."""

from __future__ import annotations

import numpy as np
import pytest

from seesr.api import Upscaler
from seesr.errors import Cancelled, SeesrError
from seesr.progress import Cancellation, RunStart, StageProgress

FAST = dict(scale=2, steps=2, process_size=0, seed=5)


def cancel_at(stage: str, done: int, events: list) -> Cancellation:
    """A Cancellation that records events and cancels itself once ``stage`` has ``done`` units (and more to do)."""

    def record(event) -> None:
        events.append(event)
        if isinstance(event, StageProgress) and event.stage == stage and done <= event.done < event.total:
            cancellation.cancel()

    cancellation = Cancellation(record)
    return cancellation


@pytest.mark.parametrize("stage, done", [("denoise", 1), ("tag", 0)])
def test_a_cancelled_seesr_run_stops_at_the_next_event_and_the_upscaler_stays_healthy(tiny_weights, lr_image, stage,
                                                                                     done):  # fmt: skip
    upscaler = Upscaler(tiny_weights, device="cpu")
    events: list = []
    if stage == "tag":  # a stage without a count: cancelled before the run starts, stopped at the first event
        upscaler.progress = Cancellation(events.append)
        upscaler.progress.cancel()
    else:
        upscaler.progress = cancel_at(stage, done, events)
    with pytest.raises(Cancelled) as stopped:
        upscaler.upscale(lr_image, **FAST)
    assert isinstance(stopped.value, SeesrError) and "cancelled" in str(stopped.value)
    stages = [e.stage for e in events if isinstance(e, StageProgress)]
    if stage == "denoise":
        assert stages[-1] == "denoise" and "decode" not in stages  # stopped between the two steps
        assert [e.done for e in events if isinstance(e, StageProgress) and e.stage == "denoise" and e.total] == [0, 1]
    else:
        assert not any(isinstance(e, RunStart) and e.engine == "realesrgan" for e in events)  # no fallback
    upscaler.progress = None
    again = upscaler.upscale(lr_image, **FAST)
    fresh = Upscaler(tiny_weights, device="cpu").upscale(lr_image, **FAST)
    assert again.engine == fresh.engine == "seesr"
    assert np.array_equal(np.asarray(again.image), np.asarray(fresh.image))


def test_a_cancelled_realesrgan_run_stops_between_tiles(tiny_weights, lr_image):
    upscaler = Upscaler(tiny_weights, device="cpu")
    events: list = []
    upscaler.progress = cancel_at("realesrgan", 1, events)
    arguments = dict(model="realesrgan-x4plus", scale=2, tile=16, tile_pad=4)
    with pytest.raises(Cancelled):
        upscaler.upscale(lr_image, **arguments)
    counts = [(e.done, e.total) for e in events if isinstance(e, StageProgress) and e.stage == "realesrgan"]
    assert 0 < counts[-1][0] < counts[-1][1], counts  # stopped with tiles left
    upscaler.progress = None
    assert upscaler.upscale(lr_image, **arguments).image.size == (lr_image.width * 2, lr_image.height * 2)


def test_cancellation_passes_events_on_until_cancelled():
    seen: list = []
    cancellation = Cancellation(seen.append)
    cancellation(StageProgress("tag", 0, 0))
    assert not cancellation.cancelled and seen == [StageProgress("tag", 0, 0)]
    cancellation.cancel()
    with pytest.raises(Cancelled):
        cancellation(StageProgress("text", 0, 0))
    assert cancellation.cancelled and len(seen) == 1  # the event that found it cancelled is not passed on
