"""Settings precedence and validation."""

from __future__ import annotations

import pytest

from seesr.errors import ConfigError
from seesr.presets import PRESETS, Settings, resolve_settings


def test_defaults_are_the_balanced_preset():
    settings = resolve_settings({}, environ={})
    assert settings.preset == "balanced" and settings.steps == 2 and settings.scale == 4.0


@pytest.mark.parametrize("preset,steps", [("speed", 1), ("balanced", 2), ("quality", 4), ("memory", 2)])
def test_presets_set_steps(preset, steps):
    assert resolve_settings({"preset": preset}, environ={}).steps == steps


def test_memory_preset_is_small_and_offloaded():
    settings = resolve_settings({"preset": "memory"}, environ={})
    assert settings.offload is True and settings.latent_tile == PRESETS["memory"]["latent_tile"]
    assert settings.full_plan().vae_decoder_tile == PRESETS["memory"]["vae_decoder_tile"]


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
                     "seed='abc'", "latent_overlap=16"):  # fmt: skip
        assert expected in message, expected


def test_booleans_and_nulls_from_text():
    settings = resolve_settings({}, environ={"SEESR_NO_FALLBACK": "yes", "SEESR_SEED": "none"})
    assert settings.no_fallback is True and settings.seed is None
    with pytest.raises(ConfigError, match="no_fallback"):
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


def test_settings_names_are_shared_with_the_cli():
    from seesr.cli import SETTING_FLAGS

    assert set(SETTING_FLAGS) <= set(Settings.__dataclass_fields__)
