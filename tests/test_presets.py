"""The settings declaration: precedence, validation, environment names, YAML keys, callee keywords."""

from __future__ import annotations

import pytest

from seesr.errors import ConfigError
from seesr.engines.seesr.engine import kds_config
from seesr.engines.seesr.kds import KdsConfig
from seesr.engines.seesr.planner import RunPlan
from seesr.settings.declare import DECLARED, describe, env_name, setting_info, Settings, value_kind
from seesr.settings.presets import PRESETS
from seesr.settings.resolve import resolve_settings


def test_defaults_are_the_balanced_preset():
    settings = resolve_settings({}, environ={})
    assert settings.preset == "balanced" and settings.steps == 2 and settings.scale == 4.0


@pytest.mark.parametrize("preset,steps", [("speed", 1), ("balanced", 2), ("quality", 4), ("memory", 2)])
def test_presets_set_steps(preset, steps):
    assert resolve_settings({"preset": preset}, environ={}).steps == steps


def test_memory_preset_is_small_and_offloaded():
    settings = resolve_settings({"preset": "memory"}, environ={})
    assert settings.offload is True and settings.latent_tile == PRESETS["memory"]["latent_tile"]
    assert settings.plan_overrides()["vae_decoder_tile"] == PRESETS["memory"]["vae_decoder_tile"]


@pytest.mark.parametrize("model,scale", [("realesr-animevideov3-x2", 2.0), ("realesr-animevideov3-x3", 3.0),
                                         ("realesr-animevideov3-x4", 4.0), ("realesrgan-x4plus-anime", 4.0),
                                         ("seesr", 4.0)])  # fmt: skip
def test_a_model_named_for_a_scale_runs_at_it_unless_a_scale_is_given(model, scale, tmp_path):
    """The model's own scale wins over the declared default, not over a flag, SEESR_SCALE or the YAML file."""
    assert resolve_settings({"model": model}, environ={}).scale == scale
    assert resolve_settings({"model": model, "scale": 3}, environ={}).scale == 3.0
    assert resolve_settings({"model": model}, environ={"SEESR_SCALE": "1.5"}).scale == 1.5
    config = tmp_path / "seesr.yaml"
    config.write_text("scale: 5\n")
    assert resolve_settings({"model": model}, environ={}, config_file=config).scale == 5.0


def test_precedence_argument_over_env_over_file_over_preset(tmp_path):
    config = tmp_path / "seesr.yaml"
    config.write_text("steps: 3\nseed: 11\ncolor_fix: adain\npreset: speed\n")
    env = {"SEESR_SEED": "22", "SEESR_COLOR_FIX": "none"}
    settings = resolve_settings({"color_fix": "wavelet"}, environ=env, config_file=config)
    assert settings.preset == "speed"  # from the file
    assert settings.steps == 3  # file beats preset (speed: 1)
    assert settings.seed == 22  # environment beats file
    assert settings.color_fix == "wavelet"  # argument beats environment
    assert resolve_settings({"steps": 1}, environ=env, config_file=config).steps == 1


def test_preset_from_environment_and_explicit_override():
    settings = resolve_settings({"steps": 3}, environ={"SEESR_PRESET": "quality"})
    assert settings.preset == "quality" and settings.steps == 3 and settings.kds_particles == 4


def test_every_bad_value_is_listed_with_its_range(tmp_path):
    with pytest.raises(ConfigError) as error:
        resolve_settings(
            {"steps": 0, "scale": 100, "color_fix": "sepia", "bogus": 1, "latent_tile": 16, "latent_overlap": 16},
            environ={"SEESR_SEED": "abc"},
        )
    message = str(error.value)
    for expected in ("steps=0 (allowed: 1 to 8)", "scale=100", "color_fix='sepia'", "unknown setting 'bogus'",
                     "SEESR_SEED='abc' (environment: must be an integer)", "latent_overlap=16"):  # fmt: skip
        assert expected in message, expected


def test_booleans_and_nulls_from_text():
    settings = resolve_settings({}, environ={"SEESR_NO_FALLBACK": "yes", "SEESR_SEED": "none"})
    assert settings.no_fallback is True and settings.seed is None
    with pytest.raises(ConfigError, match="SEESR_NO_FALLBACK='maybe'"):
        resolve_settings({}, environ={"SEESR_NO_FALLBACK": "maybe"})


def test_bad_config_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_settings({}, environ={}, config_file=broken)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_settings({}, environ={}, config_file=tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve_settings({}, environ={}, config_file=listing)


def test_a_bad_environment_value_overridden_by_an_argument_is_no_error(tmp_path):
    """`SEESR_STEPS=99 seesr upscale x.png --steps 2`: precedence first, then validation."""
    assert resolve_settings({"steps": 2}, environ={"SEESR_STEPS": "99"}).steps == 2
    assert resolve_settings({"seed": 5}, environ={"SEESR_SEED": "abc"}).seed == 5
    config = tmp_path / "seesr.yaml"
    config.write_text("color_fix: sepia\n")
    assert resolve_settings({}, environ={"SEESR_COLOR_FIX": "adain"}, config_file=config).color_fix == "adain"
    with pytest.raises(ConfigError, match=r"SEESR_STEPS=99 \(allowed: 1 to 8\)"):  # named as the user set it
        resolve_settings({}, environ={"SEESR_STEPS": "99"})
    with pytest.raises(ConfigError, match=r"SEESR_SEED='abc' \(environment: must be an integer\)"):
        resolve_settings({}, environ={"SEESR_SEED": "abc"})
    with pytest.raises(ConfigError, match=r"invalid settings: steps=99 \(allowed: 1 to 8\)$"):
        resolve_settings({"steps": 99}, environ={})


def a_valid_non_default(name: str):
    """A value of the setting that differs from its default and passes validation."""
    info, (kind, _) = setting_info(name), value_kind(name)
    default = DECLARED[name].default
    if info.choices:
        return next(c for c in reversed(info.choices) if c != default)
    if kind is bool:
        return not default
    if kind is str:
        return "x"
    low, high = info.range
    return kind(high if default != high else low)


def test_every_setting_has_an_environment_name_and_a_yaml_key(tmp_path):
    import yaml

    # a width or height excludes a scale, and several samples need SeeSR: those three on their own
    exclusive = {"width": 640, "height": 480, "num_samples": 3}
    values = {name: a_valid_non_default(name) for name in DECLARED if name not in exclusive}
    values["latent_tile"], values["latent_overlap"] = 64, 16
    for chosen in (values, exclusive):
        from_environment = resolve_settings({}, environ={env_name(name): str(v) for name, v in chosen.items()})
        config = tmp_path / "all.yaml"
        config.write_text(yaml.safe_dump(chosen))
        from_file = resolve_settings({}, environ={}, config_file=config)
        for name, value in chosen.items():
            assert getattr(from_environment, name) == value, name
            assert getattr(from_file, name) == value, name
    assert env_name("kds_particles") == "SEESR_KDS_PARTICLES"


OFFICIAL_SCRIPT_DEFAULTS = {
    "seesr": {  # test_seesr.py at cswry/SeeSR 8edecc7: setting -> (value, line)
        "prompt": ("", 245),
        "positive_prompt": ("clean, high-resolution, 8k", 246),  # --added_prompt
        "negative_prompt": ("dotted, noise, blur, lowres, smooth", 247),
        "guidance_scale": (5.5, 251),
        "conditioning_scale": (1.0, 252),
        "steps": (50, 254),  # --num_inference_steps
        "process_size": (512, 255),
        "max_latent_tile": (96, 258),  # --latent_tiled_size
        "latent_overlap": (4, 259),  # --latent_tiled_overlap
        "scale": (4.0, 260),  # --upscale
        "start_steps": (999, 264),
        "start_point": ("lr", 265),
        "sampler": ("ddpm", 78),  # DDPMScheduler.from_pretrained(..., subfolder="scheduler")
    },
    "seesr-turbo": {  # test_seesr_turbo.py at 8edecc7
        "prompt": ("", 245),
        "positive_prompt": ("clean, high-resolution, 8k", 246),
        "negative_prompt": ("dotted, noise, blur, lowres, smooth", 247),
        "guidance_scale": (1.0, 251),
        "conditioning_scale": (1.0, 252),
        "steps": (2, 254),
        "process_size": (512, 255),
        "max_latent_tile": (96, 258),
        "latent_overlap": (32, 259),  # the planner's default at tile 96
        "scale": (4.0, 260),
        "start_steps": (999, 264),
        "start_point": ("lr", 265),
        # line 78, DDPMScheduler: ours is DDIM (README, "Differences from the official scripts")
    },
}
"""The official scripts' argparse defaults (and scheduler). Intended differences, listed in the
README: --align_method adain (line 263; ours wavelet), the fixed VAE tiles 224/1024 (lines 256-257;
ours from the free memory), --mixed_precision fp16 (line 250; ours by device)."""


@pytest.mark.parametrize("model", OFFICIAL_SCRIPT_DEFAULTS)
def test_each_model_defaults_to_its_official_script(model):
    settings = resolve_settings({"model": model}, environ={})
    for name, (official, line) in OFFICIAL_SCRIPT_DEFAULTS[model].items():
        ours = getattr(settings, name)
        if name == "latent_overlap" and ours is None:  # empty: the planner's, at the model's tile
            ours = RunPlan(latent_tile=settings.max_latent_tile).latent_overlap
        assert ours == official, f"{name}: ours {ours!r}, official {official!r} (line {line})"


def test_a_preset_keeps_its_tiles_and_the_model_brings_its_overlap():
    """Model defaults come over the preset's: --model seesr --preset quality denoises the preset's
    64 px latent tiles with the model's overlap 4 (and the preset's 4 KDS particles)."""
    quality = resolve_settings({"model": "seesr", "preset": "quality"}, environ={})
    assert (quality.latent_tile, quality.latent_overlap, quality.kds_particles) == (64, 4, 4)
    memory = resolve_settings({"model": "seesr", "preset": "memory"}, environ={})
    assert (memory.latent_tile, memory.latent_overlap) == (48, 4)
    assert resolve_settings({"model": "seesr"}, environ={}).plan_overrides() == {"latent_overlap": 4}
    turbo = resolve_settings({"preset": "quality"}, environ={})
    assert (turbo.latent_tile, turbo.latent_overlap) == (64, 16)
    explicit = resolve_settings({"model": "seesr", "latent_overlap": 8}, environ={})
    assert explicit.latent_overlap == 8


def test_the_seesr_model_brings_its_steps_and_guidance():
    """model=seesr: 50 steps, guidance 5.5 and DDPM over the preset, under everything given
    explicitly; steps up to 100 for it only."""
    settings = resolve_settings({"model": "seesr"}, environ={})
    assert (settings.steps, settings.guidance_scale, settings.sampler) == (50, 5.5, "ddpm")
    assert resolve_settings({"model": "seesr", "sampler": "ddim"}, environ={}).sampler == "ddim"
    quality = resolve_settings({"model": "seesr", "preset": "quality"}, environ={})
    assert quality.steps == 50 and quality.kds_particles == 4
    assert resolve_settings({}, environ={"SEESR_MODEL": "seesr", "SEESR_STEPS": "20"}).steps == 20
    assert resolve_settings({"model": "seesr", "guidance_scale": 3}, environ={}).guidance_scale == 3.0
    assert resolve_settings({"model": "seesr", "steps": 100}, environ={}).steps == 100
    with pytest.raises(ConfigError, match=r"steps=101 \(allowed: 1 to 100\)"):
        resolve_settings({"model": "seesr", "steps": 101}, environ={})
    with pytest.raises(ConfigError, match=r"steps=50 \(allowed: 1 to 8\)"):
        resolve_settings({"steps": 50}, environ={})
    turbo = resolve_settings({}, environ={})
    assert (turbo.model, turbo.steps, turbo.guidance_scale) == ("seesr-turbo", 2, 1.0)


def test_new_settings_are_validated_together():
    with pytest.raises(ConfigError) as error:
        resolve_settings(
            {"sampler": "euler", "start_point": "middle", "start_steps": 0, "model": "sdxl", "max_latent_tile": 4},
            environ={},
        )
    message = str(error.value)
    for expected in ("sampler='euler' (allowed: ddim, ddpm)", "start_point='middle' (allowed: lr, noise)",
                     "start_steps=0 (allowed: 1 to 999)", "model='sdxl' (allowed: seesr-turbo, seesr, realesrgan-x4plus",
                     "max_latent_tile=4 (allowed: 8 to 1024)"):  # fmt: skip
        assert expected in message, expected
    settings = resolve_settings({"sampler": "ddpm", "start_point": "noise", "start_steps": 500}, environ={})
    assert (settings.sampler, settings.start_point, settings.start_steps, settings.max_latent_tile) == ("ddpm", "noise", 500, 96)


def test_text_settings_refuse_objects():
    """A non-text object (say, a Cog FieldInfo) is refused, not turned into its repr."""
    with pytest.raises(ConfigError, match="prompt=.*must be text"):
        resolve_settings({"prompt": object()}, environ={})


def test_which_settings_feed_which_keywords():
    settings = resolve_settings({"preset": "memory", "kds_particles": 2, "seed": 7}, environ={})
    assert settings.arguments_for("pipeline") == {
        "scale": 4.0, "num_inference_steps": 2, "prompt": "", "positive_prompt": settings.positive_prompt,
        "negative_prompt": settings.negative_prompt, "guidance_scale": 1.0, "conditioning_scale": 1.0,
        "color_fix": "wavelet", "process_size": settings.process_size, "sampler": "ddim", "start_point": "lr",
        "start_steps": 999, "num_samples": 1,
    }  # fmt: skip
    assert settings.arguments_for("load") == {"model": "seesr-turbo"}
    assert settings.arguments_for("planner") == {"max_latent_tile": 96}
    plan_fields = {f for f in RunPlan.__dataclass_fields__}
    assert settings.plan_overrides() == {k: v for k, v in PRESETS["memory"].items() if k in plan_fields}
    assert kds_config(settings) == KdsConfig(particles=2, bandwidth=None, patch=4, strength=1.0)
    assert set(settings.arguments_for("kds")) <= set(KdsConfig.__dataclass_fields__)


def test_keywords_a_callee_does_not_take_are_left_out_at_their_default_and_refused_otherwise():
    def older_pipeline(image, *, scale, num_inference_steps, prompt, positive_prompt, negative_prompt,
                       guidance_scale, conditioning_scale, color_fix, process_size):  # fmt: skip
        raise AssertionError("not called")

    keywords = resolve_settings({}, environ={}).arguments_for("pipeline", accepts=older_pipeline)
    assert "sampler" not in keywords and keywords["num_inference_steps"] == 2
    with pytest.raises(ConfigError, match="sampler='ddpm'"):
        resolve_settings({"sampler": "ddpm"}, environ={}).arguments_for("pipeline", accepts=older_pipeline)


def test_help_says_default_presets_models_and_range():
    text = describe("steps")
    assert text.startswith(setting_info("steps").help)
    assert "Default: 2 (speed preset 1, quality preset 4, model seesr 50)" in text
    assert "Range: 1 to 8 (model seesr 1 to 100)" in text
    assert "One of: ddim, ddpm" in describe("sampler")
    for name in DECLARED:
        assert setting_info(name).help and "Default:" in describe(name), name
    assert list(DECLARED) == [f.name for f in Settings.__dataclass_fields__.values()]


def test_readme_model_table_is_the_declaration():
    """The table of SeeSR models (docs/cli.md) says what MODELS declares (steps, guidance, sampler, tiles)."""
    from pathlib import Path

    from seesr.settings.models import MODELS

    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    rows = {line.split("|")[1].split("`")[1]: [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| `seesr")}  # fmt: skip
    assert rows.keys() == MODELS.keys()
    for name, spec in MODELS.items():
        overlap = spec.latent_overlap if spec.latent_overlap is not None else "a third of the tile, at most 32"
        expected = [f"{spec.steps} ({spec.max_steps})", str(spec.guidance_scale), spec.sampler,
                    f"{spec.max_latent_tile} / {overlap}"]  # fmt: skip
        assert rows[name][1:5] == expected, name
