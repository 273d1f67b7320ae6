"""Configuration from environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import NOMINATIM_URL, PLANETARY_COMPUTER_STAC_URL, load_settings
from inference.errors import InvalidRequestError

#: The memory bounds and their defaults.
MEMORY_BOUNDS = {
    "TERRALENS_MAX_MODELS": ("max_models", 1),
    "TERRALENS_LAYER_CACHE_MB": ("layer_cache_mb", 1024.0),
    "TERRALENS_SESSION_LAYERS_MB": ("session_layers_mb", 512.0),
    "TERRALENS_TILE_CACHE_MB": ("tile_cache_mb", 64.0),
    "TERRALENS_MALLOC_ARENAS": ("malloc_arenas", 2),
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "TERRALENS_STAC_URL", "TERRALENS_DATA_DIR", "TERRALENS_MAX_AOI_KM2", "TERRALENS_WEIGHTS",
        "TERRALENS_DEVICE", "TERRALENS_MODEL_SIZE", "PC_SDK_SUBSCRIPTION_KEY",
        "PC_SDK_SUBSCRIPTION_KEY_FILE", "TERRALENS_GEOCODER_URL", "TERRALENS_STAC_TIMEOUT",
        "TERRALENS_MAX_WINDOW_KM2", "TERRALENS_MAX_READ_PIXELS", "TERRALENS_ALLOW_PRIVATE_URLS",
        "TERRALENS_MAX_SEARCH_KM2",
        *MEMORY_BOUNDS,
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_point_at_planetary_computer_and_a_per_user_folder(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = load_settings()
    assert settings.stac_url == PLANETARY_COMPUTER_STAC_URL
    assert settings.is_planetary_computer
    assert settings.data_dir == tmp_path / "terralens"
    assert settings.runs_dir == tmp_path / "terralens" / "runs"
    assert settings.max_aoi_km2 == 100.0
    assert (settings.weights, settings.device, settings.model_size) == ("hub", "auto", "base")
    assert settings.geocoder_url == NOMINATIM_URL == "https://nominatim.openstreetmap.org/"


def test_environment_overrides(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("TERRALENS_STAC_URL", "http://127.0.0.1:9/api/stac/v1")
    clean_env.setenv("TERRALENS_DATA_DIR", str(tmp_path))
    clean_env.setenv("TERRALENS_MAX_AOI_KM2", "25")
    clean_env.setenv("TERRALENS_DEVICE", "CPU")
    settings = load_settings()
    assert not settings.is_planetary_computer
    assert settings.data_dir == tmp_path
    assert settings.max_aoi_km2 == 25.0
    assert settings.device == "cpu"


@pytest.mark.parametrize(
    ("name", "value"),
    [("TERRALENS_MAX_AOI_KM2", "lots"), ("TERRALENS_MAX_AOI_KM2", "-3"),
     ("TERRALENS_DEVICE", "tpu"), ("TERRALENS_MODEL_SIZE", "huge"),
     ("TERRALENS_GEOCODER_URL", "ftp://geocoder.local/"),
     ("TERRALENS_GEOCODER_URL", "nominatim.local")],
)
def test_bad_values_name_the_variable_and_the_value(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(InvalidRequestError, match=name) as info:
        load_settings()
    assert repr(value.lower() if name != "TERRALENS_MAX_AOI_KM2" else value) in str(info.value)


def test_subscription_key_from_a_secret_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "pc_key"
    secret.write_text("abc123\n", encoding="utf-8")
    clean_env.setenv("PC_SDK_SUBSCRIPTION_KEY_FILE", str(secret))
    assert load_settings().pc_subscription_key == "abc123"
    clean_env.setenv("PC_SDK_SUBSCRIPTION_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(InvalidRequestError, match="cannot be read"):
        load_settings()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("http://127.0.0.1:8088/nominatim", "http://127.0.0.1:8088/nominatim/"),
     ("https://geocoder.example.org/", "https://geocoder.example.org/"),
     ("  ", NOMINATIM_URL), ("off", None), (" OFF ", None)],
)
def test_geocoder_url_is_a_service_root_or_off(
    clean_env: pytest.MonkeyPatch, value: str, expected: str | None
) -> None:
    clean_env.setenv("TERRALENS_GEOCODER_URL", value)
    assert load_settings().geocoder_url == expected


@pytest.mark.parametrize("name", ["TERRALENS_MAX_AOI_KM2", "TERRALENS_STAC_TIMEOUT",
                                  "TERRALENS_MAX_WINDOW_KM2", "TERRALENS_MAX_READ_PIXELS",
                                  "TERRALENS_MAX_SEARCH_KM2", *MEMORY_BOUNDS])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "Infinity", "0"])
def test_limits_must_be_finite_positive_numbers(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(InvalidRequestError) as info:
        load_settings()
    message = str(info.value)
    assert name in message and repr(value) in message and "finite, positive" in message


def test_window_and_pixel_limits_and_the_private_url_switch(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.max_window_km2 == 4 * settings.max_aoi_km2 == 400.0
    assert settings.max_read_pixels == 64_000_000 and not settings.allow_private_urls
    clean_env.setenv("TERRALENS_MAX_AOI_KM2", "50")
    clean_env.setenv("TERRALENS_MAX_READ_PIXELS", "1e6")
    clean_env.setenv("TERRALENS_ALLOW_PRIVATE_URLS", "1")
    settings = load_settings()
    assert (settings.max_window_km2, settings.max_read_pixels) == (200.0, 1_000_000)
    assert settings.allow_private_urls
    clean_env.setenv("TERRALENS_MAX_WINDOW_KM2", "10")
    with pytest.raises(InvalidRequestError, match="at least TERRALENS_MAX_AOI_KM2"):
        load_settings()


def test_the_search_limit_is_its_own_setting_and_at_least_the_run_limit(
    clean_env: pytest.MonkeyPatch,
) -> None:
    settings = load_settings()
    assert (settings.max_search_km2, settings.max_aoi_km2) == (10_000.0, 100.0)
    clean_env.setenv("TERRALENS_MAX_SEARCH_KM2", "2500")
    assert load_settings().max_search_km2 == 2500.0
    clean_env.setenv("TERRALENS_MAX_SEARCH_KM2", "lots")
    with pytest.raises(InvalidRequestError, match="TERRALENS_MAX_SEARCH_KM2 must be a number"):
        load_settings()
    clean_env.setenv("TERRALENS_MAX_SEARCH_KM2", "50")
    with pytest.raises(InvalidRequestError, match="at least TERRALENS_MAX_AOI_KM2"):
        load_settings()
    # A run limit above the default search limit raises the search default with it.
    clean_env.delenv("TERRALENS_MAX_SEARCH_KM2")
    clean_env.setenv("TERRALENS_MAX_AOI_KM2", "20000")
    assert load_settings().max_search_km2 == 20_000.0


def test_memory_bounds_have_defaults_and_can_be_set(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    for name, (field, default) in MEMORY_BOUNDS.items():
        assert getattr(settings, field) == default, name
        clean_env.setenv(name, "3")
    settings = load_settings()
    assert all(getattr(settings, field) == 3 for field, _ in MEMORY_BOUNDS.values())
    for name in ("TERRALENS_MAX_MODELS", "TERRALENS_MALLOC_ARENAS"):
        clean_env.setenv(name, "1.5")
        with pytest.raises(InvalidRequestError, match=f"{name} must be a whole number"):
            load_settings()
        clean_env.setenv(name, "2")


def test_the_subscription_key_never_shows_in_the_settings_repr(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "pc_key"
    secret.write_text("s3cr3t-key-value", encoding="utf-8")
    clean_env.setenv("PC_SDK_SUBSCRIPTION_KEY_FILE", str(secret))
    settings = load_settings()
    assert settings.pc_subscription_key == "s3cr3t-key-value"
    assert "s3cr3t" not in repr(settings) and "s3cr3t" not in str(settings)
