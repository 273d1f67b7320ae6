"""Colour tables for every layer TerraLens shows, defined once.

Continuous layers use a colour *ramp* (stops from the low to the high end of a display range in
physical units); class maps use one colour per class value; Sentinel-2 inputs are shown as RGB
composites of three bands. The names of the ramps are the ``colormap`` names of
:data:`inference.modalities.MODALITY_INFO`; the LULC colours are those of
:data:`inference.modalities.LULC_CLASSES`. Map rendering, legends, exports and tests all read
these tables, so a colour changes in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from inference.errors import InvalidRequestError
from inference.modalities import CLASS_NODATA as _CLASS_NODATA
from inference.modalities import LULC_CLASSES

#: Transparent (alpha 0) as an RGBA tuple.
TRANSPARENT: tuple[int, int, int, int] = (0, 0, 0, 0)


class StyleKind(StrEnum):
    """How a layer's values become colours."""

    CONTINUOUS = "continuous"  # one band through a colour ramp
    CLASSES = "classes"  # one band of class values, one colour each
    RGB = "rgb"  # three bands stretched into red, green, blue


#: Colour ramps, low to high, as (position in 0..1, "#rrggbb") stops.
RAMPS: dict[str, tuple[tuple[float, str], ...]] = {
    # SAR backscatter in dB: dark (smooth water, shadow) to bright (built area, corner reflectors).
    "gray": ((0.0, "#000000"), (1.0, "#ffffff")),
    # NDVI -1..1: brown (bare, built) through white (0) to green (dense vegetation).
    "ndvi": (
        (0.0, "#8c510a"), (0.25, "#d8b365"), (0.5, "#f5f5f5"), (0.75, "#91cf60"),
        (1.0, "#1a9850"),
    ),
    # Elevation: lowland green through ochre and brown to snowy white.
    "terrain": (
        (0.0, "#1f6f43"), (0.2, "#5fa052"), (0.4, "#c9d08b"), (0.6, "#c79f5a"),
        (0.8, "#8a6240"), (1.0, "#f4f1ee"),
    ),
    # Probabilities / confidences 0..1: pale to deep blue.
    "confidence": ((0.0, "#f7fbff"), (0.5, "#6baed6"), (1.0, "#08306b")),
    # Differences (generated − real), symmetric around 0: blue (below) – white – red (above).
    "diverging": ((0.0, "#2166ac"), (0.25, "#92c5de"), (0.5, "#f7f7f7"), (0.75, "#f4a582"),
                  (1.0, "#b2182b")),
}


def _matplotlib_ramp(name: str, stops: int = 17) -> tuple[tuple[float, str], ...]:
    """Stops sampled from one of matplotlib's colour maps (perceptually uniform ones are
    colour-blind safe)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    cmap = colormaps[name]
    return tuple((i / (stops - 1), to_hex(cmap(i / (stops - 1)))) for i in range(stops))


#: Colour-blind-safe ramps an analyst can pick for any continuous layer (matplotlib's
#: perceptually uniform maps, and a diverging one for signed values).
CVD_SAFE_RAMPS: tuple[str, ...] = ("viridis", "cividis", "magma", "BrBG")
RAMPS.update({name: _matplotlib_ramp(name) for name in CVD_SAFE_RAMPS})

#: Colour of the positive class of binary predictions ("[P] Water").
PREDICTION_COLOUR = "#1565ff"
#: Colours of further prediction classes (multi-class fine-tuned heads), in class order from 1.
PREDICTION_PALETTE: tuple[str, ...] = (
    PREDICTION_COLOUR, "#ff6f00", "#d81b60", "#8e24aa", "#00897b", "#fdd835", "#6d4c41",
)
#: Class value written for "no data" in class-map GeoTIFFs and PNG rendering.
CLASS_NODATA = _CLASS_NODATA


@dataclass(frozen=True)
class ClassEntry:
    """One class of a class map: its value, name and colour (``None`` = drawn transparent)."""

    value: int
    name: str
    colour: str | None


@dataclass(frozen=True)
class Style:
    """How one display layer is coloured.

    Attributes:
        kind: Continuous ramp, class colours or RGB composite.
        ramp: Name of a ramp in :data:`RAMPS` (continuous layers).
        vmin: Physical value drawn with the low end of the ramp (or mapped to 0 in RGB).
        vmax: Physical value drawn with the high end of the ramp (or mapped to 255 in RGB).
        classes: Class entries (class maps).
        bands: Band names (one, or red/green/blue for RGB).
    """

    kind: StyleKind
    ramp: str | None = None
    vmin: float = 0.0
    vmax: float = 1.0
    classes: tuple[ClassEntry, ...] = ()
    bands: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind is StyleKind.CONTINUOUS and self.ramp not in RAMPS:
            raise InvalidRequestError(
                f"unknown colour ramp {self.ramp!r}; choose one of {sorted(RAMPS)}"
            )
        if self.kind is not StyleKind.CLASSES and not self.vmax > self.vmin:
            raise InvalidRequestError(
                f"display range must grow from low to high, got {self.vmin!r}..{self.vmax!r}"
            )


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` → (r, g, b) integers 0..255."""
    text = colour.lstrip("#")
    if len(text) != 6:
        raise InvalidRequestError(f"colour must look like '#rrggbb', got {colour!r}")
    try:
        return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
    except ValueError as err:
        raise InvalidRequestError(f"colour must look like '#rrggbb', got {colour!r}") from err


def ramp_lut(ramp: str, size: int = 256) -> np.ndarray:
    """Colour look-up table of a ramp.

    Args:
        ramp: Name of a ramp in :data:`RAMPS`.
        size: Number of entries.

    Returns:
        ``uint8`` array ``(size, 3)``; entry 0 is the low end, entry ``size-1`` the high end.
    """
    if ramp not in RAMPS:
        raise InvalidRequestError(f"unknown colour ramp {ramp!r}; choose one of {sorted(RAMPS)}")
    stops = RAMPS[ramp]
    positions = np.array([p for p, _ in stops], dtype=np.float64)
    colours = np.array([hex_to_rgb(c) for _, c in stops], dtype=np.float64)
    x = np.linspace(0.0, 1.0, size)
    lut = np.stack([np.interp(x, positions, colours[:, i]) for i in range(3)], axis=1)
    return np.round(lut).astype(np.uint8)


def lulc_classes() -> tuple[ClassEntry, ...]:
    """Class entries of TerraMind's LULC map, from :data:`inference.modalities.LULC_CLASSES`."""
    return tuple(ClassEntry(c.index, c.name, c.colour) for c in LULC_CLASSES)


def prediction_classes(class_names: list[str] | tuple[str, ...]) -> tuple[ClassEntry, ...]:
    """Class entries of a prediction map: class 0 (background) transparent, then the palette.

    Args:
        class_names: Names in class-value order, e.g. ``["not water", "water"]``.
    """
    entries = [ClassEntry(0, class_names[0], None)] if class_names else []
    for value, name in enumerate(class_names[1:], start=1):
        colour = PREDICTION_PALETTE[(value - 1) % len(PREDICTION_PALETTE)]
        entries.append(ClassEntry(value, name, colour))
    return tuple(entries)


def class_lut(classes: tuple[ClassEntry, ...]) -> np.ndarray:
    """RGBA look-up table (256 entries) of a class map; unknown values and 255 are transparent."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    for entry in classes:
        if entry.colour is not None and 0 <= entry.value < CLASS_NODATA:
            lut[entry.value, :3] = hex_to_rgb(entry.colour)
            lut[entry.value, 3] = 255
    return lut


def colourise(values: np.ndarray, style: Style) -> np.ndarray:
    """Turn physical values into RGBA pixels.

    Args:
        values: ``(y, x)`` for continuous and class styles, ``(3, y, x)`` for RGB. Continuous
            and RGB values are floats with NaN for no data; class values are integers with
            :data:`CLASS_NODATA` for no data.
        style: The layer's style.

    Returns:
        ``uint8`` array ``(y, x, 4)``; alpha is 0 where there is no data.
    """
    if style.kind is StyleKind.CLASSES:
        idx = np.clip(values.astype(np.int64), 0, 255)
        return class_lut(style.classes)[idx]
    if style.kind is StyleKind.RGB:
        if values.ndim != 3 or values.shape[0] != 3:
            raise InvalidRequestError(
                f"an RGB composite needs 3 bands, got an array of shape {values.shape!r}"
            )
        valid = np.all(np.isfinite(values), axis=0)
        scaled = (values - style.vmin) / (style.vmax - style.vmin)
        rgb = np.round(np.clip(np.nan_to_num(scaled), 0.0, 1.0) * 255).astype(np.uint8)
        alpha = np.where(valid, 255, 0).astype(np.uint8)
        return np.concatenate([np.moveaxis(rgb, 0, -1), alpha[..., None]], axis=-1)
    if style.ramp is None:
        raise InvalidRequestError("a continuous style needs a colour ramp")
    lut = ramp_lut(style.ramp)
    valid = np.isfinite(values)
    scaled = np.clip(np.nan_to_num((values - style.vmin) / (style.vmax - style.vmin)), 0, 1)
    idx = np.round(scaled * (len(lut) - 1)).astype(np.int64)
    rgba = np.zeros((*values.shape, 4), dtype=np.uint8)
    rgba[..., :3] = lut[idx]
    rgba[..., 3] = np.where(valid, 255, 0)
    return rgba


def ramp_css(ramp: str) -> str:
    """A CSS ``linear-gradient`` (left = low, right = high) drawing the ramp."""
    if ramp not in RAMPS:
        raise InvalidRequestError(f"unknown colour ramp {ramp!r}; choose one of {sorted(RAMPS)}")
    stops = ", ".join(f"{colour} {pos * 100:.0f}%" for pos, colour in RAMPS[ramp])
    return f"linear-gradient(to right, {stops})"
