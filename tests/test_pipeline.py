"""End-to-end parity of the untiled SeeSR-Turbo pipeline with the official implementation."""

from __future__ import annotations

import copy
import inspect
import json

import numpy as np
import pytest
import torch
from PIL import Image

from seesr.errors import ConfigError, InputError, WeightsError
from seesr.engines.seesr.pipeline import SeesrPipeline, build_prompt
from seesr.engines.seesr.planner import RunPlan
from seesr.engines.seesr.sampling import NoiseSchedule, previous_timestep, trailing_timesteps
from seesr.weights import WeightPaths

STEP_COUNTS = (1, 2, 4)


def official_clean_estimate(tiny, refs, prefix: str) -> torch.Tensor:
    """The x0 of the official run's last step. A DDIM step from x_t to x_prev is linear in the
    (x0, noise) it predicted: x_t = sqrt(a) x0 + sqrt(1-a) eps, x_prev = sqrt(a') x0 + sqrt(1-a') eps;
    two consecutive official latents (the start latents before step 0) solve it for x0."""
    ref = refs("pipeline")
    timesteps = ref[f"{prefix}.timesteps"].tolist()
    schedule = NoiseSchedule.from_pretrained(tiny / "sd_turbo" / "scheduler")
    n, t = len(timesteps), timesteps[-1]
    before = (
        refs("pipeline_inputs")["start_latents"] if n == 1 else ref[f"{prefix}.step{n - 2}.t{timesteps[-2]}.latents"]
    ).double()
    after = ref[f"{prefix}.step{n - 1}.t{t}.latents"].double()
    a, a_prev = schedule.alpha(t), schedule.alpha(previous_timestep(t, n))
    det = a**0.5 * (1 - a_prev) ** 0.5 - (1 - a) ** 0.5 * a_prev**0.5
    return ((1 - a_prev) ** 0.5 * before - (1 - a) ** 0.5 * after).div(det).float()


def assert_latents_close(ours: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """The fixture's acceptance for pipeline latents: max|diff| <= 1e-4 * max|ref|."""
    diff = (ours - expected).abs().max().item()
    assert diff <= 1e-4 * expected.abs().max().item(), f"{what}: max diff {diff}"


def assert_steps_match_official(tiny, refs, prefix: str, recorded: dict[int, torch.Tensor]) -> None:
    """Every step but the last against the official latents; the last (our clean estimate)
    against the official run's x0."""
    ref = refs("pipeline")
    timesteps = ref[f"{prefix}.timesteps"].tolist()
    assert len(recorded) == len(timesteps)
    for i, t in enumerate(timesteps[:-1]):
        assert_latents_close(recorded[i], ref[f"{prefix}.step{i}.t{t}.latents"], f"step {i} (t={t})")
    assert_latents_close(recorded[len(timesteps) - 1], official_clean_estimate(tiny, refs, prefix), "last step x0")


@pytest.fixture
def official_last_step(monkeypatch):
    """Make the last step an ordinary DDIM step, as the official DDIM run takes it (landing on
    alphas_cumprod[0] with a little predicted noise left), to compare whole official outputs."""
    import seesr.engines.seesr.pipeline

    step = seesr.engines.seesr.pipeline.denoise_step
    monkeypatch.setattr(seesr.engines.seesr.pipeline, "denoise_step", lambda *args, last, **kwargs: step(*args, last=False, **kwargs))


def run_reference_call(pipe, tiny, refs, steps: int, **overrides):
    """The fixture's official call: 144x96 input, scale 1, RAM outputs and initial noise from refs."""
    meta = json.loads((tiny / "refs" / "meta.json").read_text())
    recorded: dict[int, torch.Tensor] = {}
    kwargs = dict(
        scale=1,
        num_inference_steps=steps,
        process_size=0,
        tags=meta["ram_tags"],
        ram_embeds=refs("ram_outputs")["image_embeds"],
        latents=refs("pipeline_inputs")["init_latents"],
        lr_latent="mean",
        color_fix="none",
        output_type="pt",
        callback=lambda i, t, latents: recorded.__setitem__(i, latents.clone()),
        plan=RunPlan(latent_tile=96, latent_overlap=4),
    )
    kwargs.update(overrides)
    out = pipe(Image.open(tiny / "inputs" / "pipeline_input.png"), **kwargs)
    return out, recorded


def test_prompt_matches_official(tiny, refs, tiny_pipe):
    meta = json.loads((tiny / "refs" / "meta.json").read_text())
    prompt = build_prompt(meta["ram_tags"])
    assert prompt == meta["prompt"]
    ids = tiny_pipe.prompt_token_ids(prompt)
    assert torch.equal(ids, refs("pipeline_inputs")["prompt_input_ids"])
    embeds = tiny_pipe.encode_prompt(prompt)
    torch.testing.assert_close(embeds, refs("pipeline_inputs")["prompt_embeds"], atol=1e-5, rtol=1e-5)


def test_lr_latents_match_official(tiny, refs, tiny_pipe):
    from seesr.imaging.convert import pil_to_tensor

    image = pil_to_tensor(Image.open(tiny / "inputs" / "pipeline_input.png"))
    latents = tiny_pipe.encode_image(image, torch.Generator().manual_seed(0), "mean")
    torch.testing.assert_close(latents, refs("pipeline_inputs")["lr_latents_scaled"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_untiled_pipeline_matches_official(tiny, refs, tiny_pipe, steps):
    ref = refs("pipeline")
    prefix = f"steps{steps}_untiled"
    out, recorded = run_reference_call(tiny_pipe, tiny, refs, steps)

    assert out.timesteps == ref[f"{prefix}.timesteps"].tolist()
    assert_steps_match_official(tiny, refs, prefix, recorded)
    assert torch.equal(out.latents, recorded[steps - 1])
    decoded = (tiny_pipe.decode(out.latents) / 2 + 0.5).clamp(0, 1)
    torch.testing.assert_close(out.images, decoded, atol=0, rtol=0)
    # the clean estimate is not the official (noisier) last latent
    official_last = ref[f"{prefix}.vae_decode_input"] * 0.18215
    assert (out.latents - official_last).abs().max() > 1e-2


@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_untiled_pipeline_with_the_official_last_step_matches_it_whole(tiny, refs, tiny_pipe, official_last_step, steps):
    ref = refs("pipeline")
    prefix = f"steps{steps}_untiled"
    out, recorded = run_reference_call(tiny_pipe, tiny, refs, steps)
    for i, t in enumerate(out.timesteps):
        assert_latents_close(recorded[i], ref[f"{prefix}.step{i}.t{t}.latents"], f"step {i} (t={t})")
    decode_input = ref[f"{prefix}.vae_decode_input"]
    torch.testing.assert_close(out.latents / 0.18215, decode_input, atol=1e-4 * decode_input.abs().max().item(), rtol=0)
    decoded_raw = tiny_pipe.decode(out.latents)
    torch.testing.assert_close(decoded_raw, ref[f"{prefix}.decoded_raw"], atol=1e-3, rtol=0)
    torch.testing.assert_close(out.images, (ref[f"{prefix}.decoded_raw"] / 2 + 0.5).clamp(0, 1), atol=1e-3, rtol=0)


def test_ddpm_sampler_matches_official(tiny, refs, tiny_pipe):
    """The official turbo script's stochastic DDPM step, same generator use: one
    randn(latents.shape) per step from torch.Generator().manual_seed(20240713)."""
    ref = refs("pipeline")
    prefix = "ddpm_steps2_untiled"
    generator = torch.Generator().manual_seed(20240713)
    out, recorded = run_reference_call(tiny_pipe, tiny, refs, 2, sampler="ddpm", generator=generator)
    assert out.timesteps == ref[f"{prefix}.timesteps"].tolist()
    for i, t in enumerate(out.timesteps):  # DDPM's last step is the clean estimate already
        assert_latents_close(recorded[i], ref[f"{prefix}.step{i}.t{t}.latents"], f"step {i} (t={t})")
    assert not torch.allclose(recorded[0], ref[f"steps2_untiled.step0.t{out.timesteps[0]}.latents"], atol=1e-2)
    other, _ = run_reference_call(tiny_pipe, tiny, refs, 2, sampler="ddpm", generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(other.latents, out.latents, atol=1e-3)


def test_start_point_and_start_steps(tiny, refs, tiny_pipe):
    """start_point="lr" noises the LR latent to start_steps (999: the official start latents);
    "noise" starts from the initial noise itself."""
    start: dict[str, torch.Tensor] = {}

    def first_input(**kwargs) -> torch.Tensor:
        seen = []
        predict = tiny_pipe.predict_noise

        def spy(latents, *args):
            seen.append(latents.clone())
            return predict(latents, *args)

        tiny_pipe.predict_noise = spy
        try:
            run_reference_call(tiny_pipe, tiny, refs, 1, **kwargs)
        finally:
            del tiny_pipe.predict_noise
        return seen[0]

    inputs = refs("pipeline_inputs")
    start["lr"] = first_input()
    torch.testing.assert_close(start["lr"], inputs["start_latents"], atol=1e-4, rtol=1e-4)
    start["noise"] = first_input(start_point="noise")
    assert torch.equal(start["noise"], inputs["init_latents"])
    start["lr500"] = first_input(start_steps=500, num_inference_steps=2)  # t=999 skipped, 499 runs
    schedule = tiny_pipe.schedule
    expected = schedule.alphas_cumprod[500].sqrt() * inputs["lr_latents_scaled"] + (
        1 - schedule.alphas_cumprod[500]
    ).sqrt() * inputs["init_latents"]
    torch.testing.assert_close(start["lr500"], expected, atol=1e-4, rtol=1e-4)


def official_start_steps_loop(pipe, tiny, refs, scheduler, steps: int, start_steps: int, generator):
    """The official denoising loop's rule (``pipelines/pipeline_seesr.py`` lines 968-1012 and 1188)
    written out with diffusers' scheduler: the LR latent noised to ``start_steps`` by
    ``scheduler.add_noise``, every timestep above ``start_steps`` skipped, ``scheduler.step`` after
    each prediction (the networks' forward, checked against the official one above, is ours).
    Returns the start latents, the timesteps that ran, each step's latents and the last x0."""
    from seesr.imaging.convert import pil_to_tensor

    inputs = refs("pipeline_inputs")
    condition = pil_to_tensor(Image.open(tiny / "inputs" / "pipeline_input.png"))
    ram_embeds = refs("ram_outputs")["image_embeds"]
    scheduler.set_timesteps(steps)
    latents = scheduler.add_noise(inputs["lr_latents_scaled"], inputs["init_latents"], torch.tensor([start_steps]))
    start, ran, stepped, clean = latents, [], [], None
    for t in scheduler.timesteps:
        if t > start_steps:
            continue
        noise_pred = pipe.predict_noise(latents, int(t), inputs["prompt_embeds"], ram_embeds, condition, 1.0, 1.0)
        extra = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
        out = scheduler.step(noise_pred.float(), t, latents, **extra)
        latents, clean = out.prev_sample, out.pred_original_sample
        ran.append(int(t))
        stepped.append(latents)
    return start, ran, stepped, clean


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize(
    "spacing,steps,start_steps",
    [("trailing", 4, 500), ("trailing", 4, 499), ("leading", 4, 500), ("leading", 50, 100)],
)
def test_start_steps_skips_the_timesteps_above_it_as_the_official_loop(
    tiny, refs, tiny_pipe, sampler, spacing, steps, start_steps
):
    """start_steps < 999: the LR latent noised to start_steps, then only the timesteps at or below it
    (sd-turbo's trailing spacing, and SD-2-base's leading one): the same timesteps, start latents
    and latents after every step as the official loop, with DDIM and with DDPM (same generator
    use); the last step is our clean estimate, the official step's x0. The callback sees only the
    steps that run."""
    from diffusers import DDIMScheduler, DDPMScheduler

    config = json.loads((tiny / "sd_turbo" / "scheduler" / "scheduler_config.json").read_text())
    if spacing == "leading":
        config.pop("timestep_spacing")  # SD-2-base's scheduler config: diffusers' "leading" default
    pipe = copy.copy(tiny_pipe)
    pipe.schedule = NoiseSchedule.from_config(config)
    scheduler = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}[sampler].from_config(config)
    start, ran, stepped, clean = official_start_steps_loop(
        pipe, tiny, refs, scheduler, steps, start_steps, torch.Generator().manual_seed(11)
    )
    first_inputs = []
    predict = pipe.predict_noise
    pipe.predict_noise = lambda latents, *args: first_inputs.append(latents.clone()) or predict(latents, *args)
    out, recorded = run_reference_call(
        pipe, tiny, refs, steps, sampler=sampler, start_steps=start_steps, generator=torch.Generator().manual_seed(11)
    )
    full = scheduler.timesteps.tolist()
    assert out.timesteps == ran == [t for t in full if t <= start_steps] and len(ran) < len(full)
    assert len(recorded) == len(ran) and sorted(recorded) == list(range(len(ran)))
    assert_latents_close(first_inputs[0], start, "start latents (noise level start_steps)")
    for i, t in enumerate(ran[:-1]):
        assert_latents_close(recorded[i], stepped[i], f"step {i} (t={t})")
    assert_latents_close(recorded[len(ran) - 1], clean, "last step x0")


def test_start_steps_below_every_timestep_is_refused_before_any_work(tiny, tiny_pipe):
    """Officially nothing would run and the noised start latent would be decoded; ours refuses it
    with what to do, before the tagger runs."""
    lr = Image.open(tiny / "inputs" / "pipeline_lr_crop.png")
    tagged = []
    tiny_pipe.tag = lambda image: tagged.append(image)
    try:
        with pytest.raises(ConfigError, match=r"start_steps=500 is below every timestep of 1 step \(the lowest is "
                                              r"999\).*raise start_steps to 999 or more, or take more steps"):
            tiny_pipe(lr, num_inference_steps=1, start_steps=500, seed=0)
        with pytest.raises(ConfigError, match=r"the lowest is 249"):
            tiny_pipe(lr, num_inference_steps=4, start_steps=248, seed=0)
    finally:
        del tiny_pipe.tag
    assert not tagged
    assert tiny_pipe.schedule.timesteps(4, 249) == [249]


def test_pil_output_matches_official_png(tiny, refs, tiny_pipe, official_last_step):
    out, _ = run_reference_call(tiny_pipe, tiny, refs, 2, output_type="pil")
    ours = np.asarray(out.images[0]).astype(int)
    official = np.asarray(Image.open(tiny / "refs" / "pipeline" / "steps2_untiled.png").convert("RGB")).astype(int)
    assert ours.shape == official.shape
    off = np.abs(ours - official)
    assert off.max() <= 1
    assert (off == 0).mean() >= 0.999


def test_trailing_timesteps():
    assert trailing_timesteps(1) == [999]
    assert trailing_timesteps(2) == [999, 499]
    assert trailing_timesteps(4) == [999, 749, 499, 249]
    assert trailing_timesteps(3) == [999, 666, 332]  # diffusers: round(arange(1000, 0, -1000/3)) - 1


def test_full_call_tags_upscales_and_is_deterministic(tiny, tiny_pipe):
    lr = Image.open(tiny / "inputs" / "pipeline_lr_crop.png")
    first = tiny_pipe(lr, scale=4, num_inference_steps=1, seed=7, process_size=0)
    second = tiny_pipe(lr, scale=4, num_inference_steps=1, seed=7, process_size=0)
    other = tiny_pipe(lr, scale=4, num_inference_steps=1, seed=8, process_size=0)
    image = first.images[0]
    assert image.size == (lr.width * 4, lr.height * 4)
    assert first.prompt.startswith(first.tags + ", ")
    assert first.tags == tiny_pipe.tag(lr).tags[0]
    assert np.array_equal(np.asarray(image), np.asarray(second.images[0]))
    assert not np.array_equal(np.asarray(image), np.asarray(other.images[0]))


def test_output_size_is_exact_for_non_multiple_of_8(tiny, tiny_pipe):
    lr = Image.open(tiny / "inputs" / "pipeline_lr_crop.png").crop((0, 0, 35, 23))
    out = tiny_pipe(lr, scale=2, num_inference_steps=1, seed=0, process_size=64)
    # process_size 64 / scale 2 = 32 > 23: enlarged first, worked on, then resized to 70x46 exactly.
    assert out.images[0].size == (70, 46)


def test_guidance_uses_negative_prompt(tiny, refs, tiny_pipe):
    base, _ = run_reference_call(tiny_pipe, tiny, refs, 1)
    cfg_a, _ = run_reference_call(tiny_pipe, tiny, refs, 1, guidance_scale=2.0, negative_prompt="blurry")
    cfg_b, _ = run_reference_call(tiny_pipe, tiny, refs, 1, guidance_scale=2.0, negative_prompt="noise")
    assert not torch.allclose(base.latents, cfg_a.latents)
    assert not torch.allclose(cfg_a.latents, cfg_b.latents)


def test_bad_arguments_are_refused_together(tiny, tiny_pipe):
    lr = Image.open(tiny / "inputs" / "pipeline_lr_crop.png")
    with pytest.raises(ConfigError) as err:
        tiny_pipe(lr, num_inference_steps=0, color_fix="sepia", guidance_scale=0.5, sampler="euler", start_steps=1000)
    message = str(err.value)
    assert "num_inference_steps" in message and "color_fix" in message and "guidance_scale" in message
    assert "sampler" in message and "start_steps" in message
    with pytest.raises(InputError):
        tiny_pipe(np.zeros((4, 4, 3)))


def test_missing_weights_are_listed(tmp_path):
    with pytest.raises(WeightsError) as err:
        SeesrPipeline.from_pretrained(WeightPaths.from_dir(tmp_path))
    message = str(err.value)
    assert "DAPE.pth" in message and "ram_swin_large_14m.pth" in message and "seesr weights download" in message


def official_asymmetric_weights(height, width, device=None, dtype=None):
    """The official SeeSR tile weights: Gaussian centred at (t-1)/2 on x but t/2 on y."""
    var = 0.01
    x = torch.arange(width, dtype=torch.float64)
    y = torch.arange(height, dtype=torch.float64)
    norm = (2 * np.pi * var) ** 0.5
    x_probs = torch.exp(-((x - (width - 1) / 2) ** 2) / (width * width) / (2 * var)) / norm
    y_probs = torch.exp(-((y - height / 2) ** 2) / (height * height) / (2 * var)) / norm
    return torch.outer(y_probs, x_probs)


@pytest.mark.parametrize("steps", STEP_COUNTS)
def test_tiled_pipeline_matches_official_with_its_weights(tiny, refs, tiny_pipe, monkeypatch, steps):
    """With the official (asymmetric) blend weights swapped in, our tiled denoising reproduces the
    official tiled run: proves the grid (8 tiles of 8x8, snapped offsets), the 8x condition crops and
    the accumulation. With our symmetric weights the result differs, as intended."""
    import seesr.imaging.tiling

    ref = refs("pipeline")
    prefix = f"steps{steps}_tiled"
    tiling = dict(plan=RunPlan(latent_tile=8, latent_overlap=4, tile_batch_size=3))
    ours, _ = run_reference_call(tiny_pipe, tiny, refs, steps, **tiling)
    monkeypatch.setattr(seesr.imaging.tiling, "blend_weights", official_asymmetric_weights)
    official, recorded = run_reference_call(tiny_pipe, tiny, refs, steps, **tiling)
    assert official.timesteps == ref[f"{prefix}.timesteps"].tolist()
    assert_steps_match_official(tiny, refs, prefix, recorded)
    assert not torch.allclose(ours.latents, official.latents, atol=1e-3)
    assert ours.images.shape == (1, 3, 96, 144)


def test_one_tile_covering_the_latent_is_the_untiled_path(tiny, refs, tiny_pipe):
    untiled, _ = run_reference_call(tiny_pipe, tiny, refs, 1)
    whole, _ = run_reference_call(tiny_pipe, tiny, refs, 1, plan=RunPlan(latent_tile=18, latent_overlap=4))
    assert torch.equal(untiled.latents, whole.latents)


def test_kds_with_one_particle_is_the_plain_pipeline_bit_for_bit(tiny, refs, tiny_pipe):
    from seesr.engines.seesr.kds import KdsConfig

    plain, _ = run_reference_call(tiny_pipe, tiny, refs, 2)
    steered, _ = run_reference_call(tiny_pipe, tiny, refs, 2, kds=KdsConfig(particles=1))
    assert torch.equal(plain.latents, steered.latents) and torch.equal(plain.images, steered.images)


@pytest.mark.parametrize("plan", [RunPlan(latent_tile=96), RunPlan(latent_tile=8, latent_overlap=4, tile_batch_size=3)])
def test_kds_is_deterministic_with_and_without_tiling(tiny, refs, tiny_pipe, plan):
    from seesr.engines.seesr.kds import KdsConfig

    kds = KdsConfig(particles=3, strength=0.5)
    runs = [
        run_reference_call(tiny_pipe, tiny, refs, 2, plan=plan, kds=kds, latents=None, seed=5)[0] for _ in range(2)
    ]
    plain = run_reference_call(tiny_pipe, tiny, refs, 2, plan=plan, latents=None, seed=5)[0]
    assert torch.equal(runs[0].latents, runs[1].latents)
    assert runs[0].latents.shape == (1, 4, 12, 18) and runs[0].images.shape == (1, 3, 96, 144)
    assert not torch.equal(runs[0].latents, plain.latents)


def test_compiled_pipeline_matches_official(tiny, refs, tiny_weights):
    """``compile()`` (opt-in) traces ControlNet + UNet with the image-attention hooks; the traced
    graph (dynamo's eager backend: the tracing users get, without minutes of C++ codegen) still
    reproduces the official latents."""
    pipe = SeesrPipeline.from_pretrained(tiny_weights, device="cpu")
    assert not pipe.compiled
    pipe.compile(backend="eager")
    assert pipe.compiled
    out, recorded = run_reference_call(pipe, tiny, refs, 2)
    assert_steps_match_official(tiny, refs, "steps2_untiled", recorded)


def test_cpu_vae_layout_follows_its_dtype(tiny_weights):
    """bfloat16 on the CPU: channels_last (NHWC, what oneDNN runs without reorders, measured 2x
    faster); float32: NCHW, which keeps the official numbers exactly."""
    pipe = SeesrPipeline.from_pretrained(tiny_weights, device="cpu")
    weight = lambda: pipe.vae.decoder.conv_in.weight  # noqa: E731
    assert weight().is_contiguous() and weight().dtype == torch.float32
    pipe.to("cpu", torch.bfloat16)
    assert weight().is_contiguous(memory_format=torch.channels_last) and weight().dtype == torch.bfloat16
    pipe.set_offload(True)  # moves without a dtype: every network keeps its own (the memory preset)
    assert weight().is_contiguous(memory_format=torch.channels_last) and weight().dtype == torch.bfloat16
    assert pipe.unet.dtype == torch.bfloat16
    pipe.set_offload(False)
    pipe.to("cpu", torch.float32)
    assert weight().is_contiguous() and weight().dtype == torch.float32


def test_vae_activations_run_in_place_with_the_same_values(tiny_weights):
    """The VAE's SiLUs run in place (each on a fresh GroupNorm output): plain and tiled encode and
    decode give the same bits as with out-of-place activations."""
    pipe = SeesrPipeline.from_pretrained(tiny_weights, device="cpu")
    activations = [m for m in pipe.vae.modules() if isinstance(m, torch.nn.SiLU)]
    assert activations and all(m.inplace for m in activations)
    g = torch.Generator().manual_seed(0)
    z, image = torch.randn(1, 4, 12, 12, generator=g), torch.rand(1, 3, 96, 96, generator=g)

    def outputs():
        sample = lambda **kw: pipe.encode_image(image, torch.Generator().manual_seed(1), "sample", **kw)  # noqa: E731
        return [pipe.decode(z), pipe.decode(z, tile=4), sample(), sample(tile=48)]

    with torch.no_grad():
        in_place = outputs()
        for module in activations:
            module.inplace = False
        copied = outputs()
    assert all(torch.equal(a, b) for a, b in zip(in_place, copied, strict=True))
