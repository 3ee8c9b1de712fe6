"""The SeeSR training loop on accelerate, after the official ``train_seesr.py``.

Either model: SeeSR-Turbo (on sd-turbo) or SeeSR (on SD-2-base), from its released weights or, with
``from_base``, from its base alone (new image attention, the ControlNet initialised from the UNet).
Trainable: the whole ControlNet and the UNet's ``image_attentions``; VAE, text encoder, the rest of
the UNet and the RAM tagger are frozen. Per micro-batch: HR -> VAE latent (a posterior sample) x
scaling factor; noise; timesteps uniform in [0, 1000); DDPM ``add_noise``; prompt = HR tags (or "");
RAM embeddings of the LR image; ControlNet on the LR image upscaled to the HR size, in [0, 1]; loss =
MSE(UNet epsilon, noise) in float32; AdamW; gradients clipped over ControlNet + UNet.

Outputs under OUT: ``seesr/controlnet`` and ``seesr/unet`` (safetensors + config, the official
layout), links to the base model folders and RAM files (so OUT is a complete weights folder for
``seesr upscale --model MODEL --weights OUT``), ``checkpoints/checkpoint-N`` (accelerate state for ``--resume``),
``history.jsonl`` (loss and lr per step), ``tags.json`` and ``validation/step-N``, written by the
rules of :mod:`.run_folder` (never into what the run reads, every state file whole or absent). A
non-finite loss or gradient norm stops the run before the step is written anywhere.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from seesr.errors import ConfigError, MissingWeightsError
from seesr.io.files import write_atomically
from seesr.settings.models import MODELS
from seesr.training.data import DataFolder, StepSampler, TrainingSamples, compute_tags, read_tags
from seesr.training.degradation import NAMED_CONFIGS, DegradationConfig
from seesr.training.run_folder import (
    TAGS_FILE, VALIDATION, append_history, check_run_folder, checkpoint_step, complete_checkpoints, export_weights,
    find_checkpoint, load_checkpoint, reads_of, remove_leftovers, restart_history, save_checkpoint,
)  # fmt: skip
from seesr.training.settings import TrainSettings

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    from seesr.engines.seesr.models.controlnet import SeesrControlNetModel
    from seesr.engines.seesr.models.tagger import RamTagger
    from seesr.engines.seesr.models.unet import SeesrUNet2DConditionModel
    from seesr.engines.seesr.pipeline import SeesrPipeline
    from seesr.engines.seesr.sampling import NoiseSchedule
    from seesr.weights import WeightPaths

logger = logging.getLogger(__name__)
StepReport = Callable[[int, int, float, float], None]
"""A training progress callback: ``(step, max_steps, loss, lr)`` after each optimizer step."""

TRAINABLE_UNET_MODULES = ("image_attentions",)
"""Official ``--trainable_modules`` default: the UNet's SeeSR image cross-attention."""
ADAM_BETAS, ADAM_EPSILON = (0.9, 0.999), 1e-8
"""Official ``--adam_beta1/2`` and ``--adam_epsilon``."""
NOISE_STREAM = 2
"""Random stream of the VAE sample, noise and timesteps (the data streams are 0 and 1)."""


# ------------------------------------------------------------------------------------ the models
@dataclass
class TrainingModels:
    """The networks of one training run, loaded in float32 through :class:`SeesrPipeline`'s loader."""

    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    unet: SeesrUNet2DConditionModel
    controlnet: SeesrControlNetModel
    tagger: RamTagger
    noise_scheduler: DDPMScheduler
    """The training noise schedule (``add_noise``), read from the base model's scheduler config."""
    schedule: NoiseSchedule
    """The same schedule as inference reads it (for the validation pipeline)."""
    model: str = "seesr-turbo"
    """Which of :data:`~seesr.settings.models.MODELS` these networks are."""

    @classmethod
    def load(
        cls, paths: WeightPaths, model: str = "seesr-turbo", *, from_base: bool = False, seed: int = 0
    ) -> "TrainingModels":
        """The weights of ``model`` in a :class:`~seesr.weights.WeightPaths`, by the same rules as
        inference (turbo: sd-turbo's UNet + SeeSR's image attention; seesr: SeeSR's UNet whole on
        SD-2-base), and its base's noise schedule as DDPM (``train_seesr.py`` line 663).

        ``from_base``: the UNet of the base folder with new image attention (seeded by ``seed``) and
        a ControlNet initialised from that UNet (``train_seesr.py`` lines 680-692); the SeeSR
        weights are not read."""
        from diffusers import DDPMScheduler

        from seesr.engines.seesr.models.controlnet import SeesrControlNetModel
        from seesr.engines.seesr.models.unet import SeesrUNet2DConditionModel
        from seesr.engines.seesr.pipeline import SeesrPipeline

        base = getattr(paths, MODELS[model].base)
        networks = {}
        if from_base and base is not None:  # (no base folder: from_pretrained says what is missing)
            if not (base / "unet" / "config.json").is_file():
                raise MissingWeightsError(
                    f"training {model} from its base needs the base model's UNet in {base / 'unet'} (diffusers "
                    f"layout: config.json, diffusion_pytorch_model.safetensors); `seesr weights download` fetches "
                    f"only what upscaling reads: copy the base model's unet/ folder there (SD-2-base: from "
                    f"stabilityai/stable-diffusion-2-base or a mirror weights/README.md lists)"
                )
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                unet = SeesrUNet2DConditionModel.from_base(base, torch_dtype=torch.float32)
                networks = {"unet": unet, "controlnet": SeesrControlNetModel.from_unet(unet)}
        pipe = SeesrPipeline.from_pretrained(paths, model=model, device="cpu", torch_dtype=torch.float32, **networks)
        noise_scheduler = DDPMScheduler.from_config(DDPMScheduler.load_config(base / "scheduler"))
        return cls(pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.unet, pipe.controlnet, pipe.tagger,
                   noise_scheduler, pipe.schedule, model)

    def set_trainable(self) -> list[torch.nn.Parameter]:
        """Freeze everything but the ControlNet and the UNet's image attention; return those."""
        for model in (self.vae, self.text_encoder, self.unet, self.tagger):
            model.requires_grad_(False).eval()
        self.controlnet.requires_grad_(True).train()
        for name, module in self.unet.named_modules():
            if name.endswith(TRAINABLE_UNET_MODULES):
                module.requires_grad_(True)
        return [p for m in (self.controlnet, self.unet) for p in m.parameters() if p.requires_grad]

    def pipeline(self, unet: torch.nn.Module | None = None, controlnet: torch.nn.Module | None = None) -> SeesrPipeline:
        """A SeesrPipeline over these networks (the current weights), for validation."""
        from seesr.engines.seesr.pipeline import SeesrPipeline

        pipe = SeesrPipeline(self.vae, self.text_encoder, self.tokenizer, self.unet if unet is None else unet,
                             self.controlnet if controlnet is None else controlnet, self.tagger, self.schedule)
        pipe.model = self.model
        return pipe


@dataclass
class StepNoise:
    """The random draws of a micro-batch: VAE posterior sample noise, diffusion noise, timesteps."""

    latent_eps: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor

    @classmethod
    def draw(cls, latent_shape: tuple[int, ...], num_train_timesteps: int, generator: torch.Generator) -> "StepNoise":
        """Drawn on the CPU (the same numbers on every device): eps, noise, then timesteps."""
        eps = torch.randn(latent_shape, generator=generator)
        noise = torch.randn(latent_shape, generator=generator)
        timesteps = torch.randint(0, num_train_timesteps, (latent_shape[0],), generator=generator)
        return cls(eps, noise, timesteps)

    @classmethod
    def for_samples(cls, indices: torch.Tensor, latent_shape: tuple[int, ...], num_train_timesteps: int,
                    seed: int) -> "StepNoise":
        """One draw per sample from its own generator (seed, sample index): the numbers do not
        depend on how samples are grouped into batches, micro-batches or processes."""
        draws = [cls.draw((1, *latent_shape[1:]), num_train_timesteps, sample_generator(seed, int(i))) for i in indices]
        return cls(*(torch.cat([getattr(d, name) for d in draws]) for name in ("latent_eps", "noise", "timesteps")))


def sample_generator(seed: int, index: int) -> torch.Generator:
    """The generator of one training sample's noise: a function of (seed, sample index)."""
    state = np.random.SeedSequence([seed, NOISE_STREAM, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def training_loss(
    models: TrainingModels,
    batch: dict,
    *,
    seed: int = 0,
    draws: StepNoise | None = None,
    unet=None,
    controlnet=None,
    weight_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The official loss of one micro-batch. ``draws`` fixes the randomness (default: per sample,
    from ``seed`` and ``batch["index"]``); ``unet``/``controlnet``: the (wrapped) trainable networks."""
    unet = models.unet if unet is None else unet
    controlnet = models.controlnet if controlnet is None else controlnet
    device = next(models.vae.parameters()).device
    with torch.no_grad():
        # 1. HR -> VAE latent (a posterior sample) x scaling factor
        pixels = (batch["hr"].to(device) * 2 - 1).to(weight_dtype)
        posterior = models.vae.encode(pixels).latent_dist
        if draws is None:
            draws = StepNoise.for_samples(batch["index"], tuple(posterior.mean.shape),
                                          models.noise_scheduler.config.num_train_timesteps, seed)
        latents = (posterior.mean + posterior.std * draws.latent_eps.to(device, posterior.mean.dtype))
        latents = latents * models.vae.config.scaling_factor
        # 2. Forward diffusion at uniform timesteps
        noise = draws.noise.to(device, latents.dtype)
        timesteps = draws.timesteps.to(device)
        noisy_latents = models.noise_scheduler.add_noise(latents, noise, timesteps)
        # 3. Conditioning: prompt (tags or ""), RAM embeddings of the LR image, the LR image itself
        ids = models.tokenizer(list(batch["prompt"]), max_length=models.tokenizer.model_max_length,
                               padding="max_length", truncation=True, return_tensors="pt").input_ids
        prompt_embeds = models.text_encoder(ids.to(device))[0]
        ram_embeds = models.tagger.encode_image(batch["ram"].to(device, weight_dtype))
        condition = batch["condition"].to(device, weight_dtype)
    # 4. ControlNet + UNet epsilon prediction
    down, mid = controlnet(noisy_latents, timesteps, encoder_hidden_states=prompt_embeds, controlnet_cond=condition,
                           image_encoder_hidden_states=ram_embeds, return_dict=False)
    prediction = unet(noisy_latents, timesteps, encoder_hidden_states=prompt_embeds,
                      down_block_additional_residuals=[s.to(weight_dtype) for s in down],
                      mid_block_additional_residual=mid.to(weight_dtype),
                      image_encoder_hidden_states=ram_embeds, return_dict=False)[0]
    # 5. MSE against the target of the scheduler's prediction type, in float32
    if models.noise_scheduler.config.prediction_type == "v_prediction":
        target = models.noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    return F.mse_loss(prediction.float(), target.float(), reduction="mean")


# ---------------------------------------------------------------------------------- the run
@dataclass
class TrainResult:
    """What a run did: steps reached, the loss per step of this call, where the weights are."""

    steps: int
    losses: list[float]
    weights_dir: Path
    checkpoint: Path | None
    validation: dict[str, dict[str, float]] = field(default_factory=dict)
    is_main_process: bool = True

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


def train(
    data: str | Path,
    output: str | Path,
    *,
    settings: TrainSettings | None = None,
    progress: bool | StepReport = False,
    **overrides: Any,
) -> TrainResult:
    """Fine-tune SeeSR on ``data`` (HR images, or pairs) into ``output``; ``overrides`` are
    :class:`TrainSettings` fields. ``progress``: True draws a bar (step, loss, lr, steps/s, ETA) on
    stderr; a callable gets ``(step, max_steps, loss, lr)`` after each optimizer step (e.g.
    :class:`seesr.progress.TrainingLines`); both on the main process only. Run under
    ``accelerate launch`` for several processes."""
    if settings is None:
        settings = TrainSettings.from_sources(overrides)
    elif overrides:
        settings = TrainSettings(**{**settings.to_dict(), **overrides})
    run = _Run.start(Path(data), Path(output), settings)  # 0-3
    return run.loop(progress)  # 4


@dataclass
class _Run:
    """One training run, set up: accelerate, the models, the sample stream, the optimizer."""

    settings: TrainSettings
    output: Path
    paths: WeightPaths
    accelerator: Any
    weight_dtype: torch.dtype
    start_step: int
    models: TrainingModels
    dataset: TrainingSamples
    unet: Any
    controlnet: Any
    optimizer: Any
    lr_scheduler: Any
    loader: Any

    @classmethod
    def start(cls, data: Path, output: Path, settings: TrainSettings) -> "_Run":
        from accelerate import Accelerator, DistributedDataParallelKwargs

        from seesr.weights import WeightPaths

        folder = DataFolder.open(data)
        cuda = torch.cuda.is_available()
        if settings.mixed_precision == "fp16" and not cuda:
            raise ConfigError("mixed_precision fp16 needs a CUDA GPU; on the CPU use bf16 or no")
        # 0. Before any work: what is read, what is written, where the run starts
        degradation = DegradationConfig.load(settings.degradation)
        paths = WeightPaths.resolve(settings.weights, need=[MODELS[settings.model].base])
        check_run_folder(output, reads_of(data, paths, NAMED_CONFIGS.get(str(settings.degradation), settings.degradation)))
        accelerator = Accelerator(
            gradient_accumulation_steps=settings.gradient_accumulation_steps,
            mixed_precision=settings.mixed_precision,
            cpu=not cuda,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
        resume_dir = _starting_checkpoint(output, settings, accelerator.is_main_process)
        start_step = checkpoint_step(resume_dir) if resume_dir is not None else 0
        if start_step >= settings.max_steps:
            raise ConfigError(f"{resume_dir} is at step {start_step}; raise max_steps above it to train further")

        # 1. Models: trainable float32 copies, frozen ones in the autocast precision
        models = TrainingModels.load(paths, settings.model, from_base=settings.from_base, seed=settings.seed)
        trainable = models.set_trainable()
        if settings.gradient_checkpointing:
            models.unet.enable_gradient_checkpointing()
            models.controlnet.enable_gradient_checkpointing()
        for model in (models.vae, models.text_encoder, models.tagger):
            torch.nn.Module.to(model, device=accelerator.device, dtype=weight_dtype)

        # 2. Data: tags once (main process), then the deterministic sample stream
        if accelerator.is_main_process:
            output.mkdir(parents=True, exist_ok=True)
            remove_leftovers(output)
            compute_tags(folder, models.tagger, output / TAGS_FILE)
        accelerator.wait_for_everyone()
        tags = {k: v["tags"] for k, v in read_tags(output / TAGS_FILE).items()}
        dataset = TrainingSamples(
            folder, tags, crop_size=settings.crop_size, null_text_ratio=settings.null_text_ratio, seed=settings.seed,
            degradation=degradation,
        )

        # 3. Optimizer, schedule, accelerate
        parts = _prepared(accelerator, models, trainable, settings, resume_dir, start_step)
        if accelerator.is_main_process:
            restart_history(output, start_step)
        loader = _loader(dataset, settings, start_step, accelerator, cuda)
        return cls(settings, output, paths, accelerator, weight_dtype, start_step, models, dataset, *parts, loader)

    def loop(self, progress: bool | StepReport) -> TrainResult:
        """4. The loop: accumulate, clip, step; history, checkpoints, exported weights, validation."""
        from tqdm.auto import tqdm

        settings, accelerator, output = self.settings, self.accelerator, self.output
        unet, controlnet, optimizer, lr_scheduler = self.unet, self.controlnet, self.optimizer, self.lr_scheduler
        step = self.start_step
        losses: list[float] = []
        validation: dict[str, dict[str, float]] = {}
        checkpoint: Path | None = None
        accumulated = torch.zeros((), device=accelerator.device)
        main = accelerator.is_local_main_process
        report = progress if callable(progress) and main else None
        bar = tqdm(total=settings.max_steps, initial=step, unit="step", desc="train",
                   disable=not (progress is True and main))
        for batch in self.loader:
            with accelerator.accumulate(controlnet, unet):
                with accelerator.autocast():
                    loss = training_loss(self.models, batch, seed=settings.seed, unet=unet, controlnet=controlnet,
                                         weight_dtype=self.weight_dtype)
                accumulated += loss.detach() / settings.gradient_accumulation_steps
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    clipped = list(controlnet.parameters()) + list(unet.parameters())
                    norm = accelerator.clip_grad_norm_(clipped, settings.max_grad_norm)
                    # the same norm on every process; fp16's loss scaling skips non-finite steps itself
                    if accelerator.scaler is None and not torch.isfinite(norm):
                        raise diverged(step + 1, accelerator.reduce(accumulated, "mean").item(), settings, output)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            step += 1
            step_loss = accelerator.reduce(accumulated, "mean").item()
            if not math.isfinite(step_loss):
                raise diverged(step, step_loss, settings, output)
            accumulated.zero_()
            lr = lr_scheduler.get_last_lr()[0]
            losses.append(step_loss)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
            bar.update()
            if report is not None:
                report(step, settings.max_steps, step_loss, lr)
            checkpoint = self.after_step(step, step_loss, lr, validation) or checkpoint
        bar.close()
        accelerator.end_training()
        return TrainResult(step, losses, output, checkpoint, validation, accelerator.is_main_process)

    def after_step(self, step: int, loss: float, lr: float, validation: dict[str, dict[str, float]]) -> Path | None:
        """What follows an optimizer step: its history line, and when due a checkpoint (with the
        exported weights) and a validation; returns the checkpoint written, if any."""
        settings, accelerator, output = self.settings, self.accelerator, self.output
        checkpoint = None
        if accelerator.is_main_process:
            append_history(output, {"step": step, "loss": loss, "lr": lr})
        if step % settings.checkpoint_every == 0 or step == settings.max_steps:
            checkpoint = save_checkpoint(accelerator, output, step, settings.keep_checkpoints)
            if accelerator.is_main_process:
                unet, controlnet = accelerator.unwrap_model(self.unet), accelerator.unwrap_model(self.controlnet)
                export_weights(unet, controlnet, output, self.paths)
            accelerator.wait_for_everyone()
        if settings.validate_every and step % settings.validate_every == 0:
            if accelerator.is_main_process:
                validation[f"step-{step}"] = validate(
                    self.models, self.dataset, settings, output / VALIDATION / f"step-{step}",
                    accelerator.unwrap_model(self.unet), accelerator.unwrap_model(self.controlnet),
                )
            accelerator.wait_for_everyone()
        return checkpoint


def _prepared(accelerator: Any, models: TrainingModels, trainable: list[torch.nn.Parameter], settings: TrainSettings,
              resume_dir: Path | None, start_step: int) -> tuple[Any, Any, Any, Any]:  # fmt: skip
    """The optimizer and learning-rate schedule, prepared by accelerate with the trainable networks
    (UNet, ControlNet, optimizer, schedule), their state loaded from ``resume_dir`` when resuming."""
    from diffusers.optimization import get_scheduler

    optimizer = _optimizer(settings)(
        trainable, lr=settings.lr, betas=ADAM_BETAS, weight_decay=settings.weight_decay, eps=ADAM_EPSILON
    )
    lr_scheduler = get_scheduler(
        "cosine" if settings.lr_schedule == "cosine" else "constant_with_warmup",
        optimizer=optimizer,
        num_warmup_steps=settings.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=settings.max_steps * accelerator.num_processes,
    )
    prepared = accelerator.prepare(models.unet, models.controlnet, optimizer, lr_scheduler)
    if resume_dir is not None:
        load_checkpoint(accelerator, resume_dir)
        logger.info("resumed from %s (step %d)", resume_dir, start_step)
    return prepared


def _loader(dataset: TrainingSamples, settings: TrainSettings, start_step: int, accelerator: Any, cuda: bool) -> Any:
    """The data loader of the steps still to train: each process its share of each step's samples."""
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_size=settings.batch_size,
        sampler=StepSampler(start_step, settings.max_steps, settings.batch_size, settings.gradient_accumulation_steps,
                            accelerator.num_processes, accelerator.process_index),
        num_workers=settings.num_workers,
        pin_memory=cuda,
        persistent_workers=settings.num_workers > 0,
    )


def _optimizer(settings: TrainSettings) -> type[torch.optim.Optimizer]:
    if not settings.use_8bit_adam:
        return torch.optim.AdamW
    try:
        import bitsandbytes
    except ImportError as error:
        raise ConfigError("use_8bit_adam needs bitsandbytes: `pip install bitsandbytes`, or drop the flag") from error
    return bitsandbytes.optim.AdamW8bit


def _starting_checkpoint(output: Path, settings: TrainSettings, is_main_process: bool) -> Path | None:
    """The checkpoint a run continues from (``--resume``), or None for a new run, which is refused
    where OUT already holds another run's checkpoints (it would replace them)."""
    if settings.resume:
        return find_checkpoint(output, settings.resume, announce=is_main_process)
    existing = complete_checkpoints(output)
    if existing:
        raise ConfigError(f"{output} already holds a training run (newest: {existing[-1].name}): continue it with "
                          f"--resume latest, or train into another folder")  # fmt: skip
    return None


def diverged(step: int, loss: float, settings: TrainSettings, output: Path) -> ConfigError:
    """The one line for a non-finite loss or gradient norm: this step is not written anywhere."""
    kept = complete_checkpoints(output)
    since = f"{kept[-1].name} and its exported weights are kept" if kept else "nothing was exported"
    what = f"the loss is {loss:g}" if not math.isfinite(loss) else f"the gradient norm is not finite (loss {loss:g})"
    return ConfigError(
        f"training diverged at step {step}: {what}; the step was not saved, {since}. "
        f"Lower --lr (now {settings.lr:g}) or --max-grad-norm, or check the data"
    )


# ------------------------------------------------------------------------------- validation
VALIDATION_METRICS = ("psnr", "ssim", "lpips")
"""What validation reports (:mod:`seesr.imaging.metrics`; LPIPS only where its weights are at hand)."""


def validate(models: TrainingModels, dataset: TrainingSamples, settings: TrainSettings, folder: Path,
             unet, controlnet) -> dict[str, float]:
    """Upscale the fixed validation LR images with the current weights through SeesrPipeline; save
    bicubic | SeeSR | HR side by side; return the mean PSNR, SSIM (and LPIPS where its weights are
    at hand) against the HR crops, by the code of ``seesr evaluate``."""
    from seesr.imaging.metrics import load_scorers, score_pair
    from seesr.imaging.compare import side_by_side
    from seesr.imaging.convert import tensor_to_pil

    pipe = models.pipeline(unet, controlnet)
    was_training = controlnet.training
    controlnet.eval()
    folder.mkdir(parents=True, exist_ok=True)
    scorers, unavailable = load_scorers(VALIDATION_METRICS)
    for line in unavailable.values():
        logger.debug("validation without %s", line)
    scores: dict[str, list[float]] = {name: [] for name in scorers}
    for k in range(settings.validation_images):
        sample = dataset.validation_sample(k)
        lr, hr = tensor_to_pil(sample["lr"].unsqueeze(0)), tensor_to_pil(sample["hr"].unsqueeze(0))
        scale = hr.width / lr.width
        work = (hr.width, hr.height)
        plan = pipe.plan_for(*work, overrides={"offload": False})
        sr = pipe(lr, scale=scale, process_size=settings.crop_size, seed=settings.seed, plan=plan).images[0]
        for name, value in score_pair(sr, hr, scorers).items():
            scores[name].append(value)
        bicubic = lr.resize(hr.size, Image.Resampling.BICUBIC)
        panel = BytesIO()
        side_by_side(side_by_side(bicubic, sr), hr).save(panel, format="PNG")
        write_atomically(folder / f"{k:02d}.png", panel.getvalue(), overwrite=True, error=ConfigError)
    controlnet.train(was_training)
    result = {name: float(np.mean(values)) for name, values in scores.items()}
    write_atomically(folder / "metrics.json", json.dumps(result, indent=1).encode(), overwrite=True, error=ConfigError)
    logger.info("validation %s: %s", folder.name, ", ".join(f"{name} {value:.4f}" for name, value in result.items()))
    return result
