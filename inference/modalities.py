"""One table per fact about TerraMind's modalities.

Band orders, units, display ranges and the land-use/land-cover (LULC) classes with their
colours are defined here once and imported by the model code, the map legends, the exports and
the tests alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Modality(StrEnum):
    """TerraMind modality names, spelt as terratorch spells them."""

    S2L2A = "S2L2A"
    S2L1C = "S2L1C"
    S1GRD = "S1GRD"
    S1RTC = "S1RTC"
    DEM = "DEM"
    LULC = "LULC"
    NDVI = "NDVI"


#: Sentinel-2 L2A bands in the order TerraMind expects (12 bands, no B10).
S2L2A_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12",
)
#: Sentinel-2 L1C bands in the order TerraMind expects (13 bands, with B10).
S2L1C_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)
#: Sentinel-1 polarisations, in TerraMind's order.
S1_BANDS: tuple[str, ...] = ("VV", "VH")

#: Digital numbers added by ESA to L2A reflectances from processing baseline 04.00 on.
S2_BOA_ADD_OFFSET = 1000
#: First processing baseline carrying the offset.
S2_OFFSET_BASELINE = "04.00"


@dataclass(frozen=True)
class ModalityInfo:
    """Physical description of one modality as TerraLens shows and stores it.

    Attributes:
        modality: The modality.
        bands: Band names, in order.
        units: Physical units of the values (``""`` for unitless indices, ``"class"`` for maps).
        display_range: (low, high) used to stretch colours when nothing better is known.
        colormap: Name of the colour table (see ``app.layers``).
        long_name: Human-readable name for legends and GeoTIFF tags.
    """

    modality: Modality
    bands: tuple[str, ...]
    units: str
    display_range: tuple[float, float]
    colormap: str
    long_name: str


MODALITY_INFO: dict[Modality, ModalityInfo] = {
    Modality.S2L2A: ModalityInfo(
        Modality.S2L2A, S2L2A_BANDS, "DN (reflectance x 10000)", (0.0, 3000.0), "rgb",
        "Sentinel-2 L2A surface reflectance",
    ),
    Modality.S2L1C: ModalityInfo(
        Modality.S2L1C, S2L1C_BANDS, "DN (reflectance x 10000)", (0.0, 3000.0), "rgb",
        "Sentinel-2 L1C top-of-atmosphere reflectance",
    ),
    Modality.S1GRD: ModalityInfo(
        Modality.S1GRD, S1_BANDS, "dB", (-25.0, 5.0), "gray",
        "Sentinel-1 GRD backscatter",
    ),
    Modality.S1RTC: ModalityInfo(
        Modality.S1RTC, S1_BANDS, "dB", (-25.0, 5.0), "gray",
        "Sentinel-1 RTC backscatter (gamma0)",
    ),
    Modality.DEM: ModalityInfo(
        Modality.DEM, ("DEM",), "m", (0.0, 1500.0), "terrain", "Elevation above sea level",
    ),
    Modality.NDVI: ModalityInfo(
        Modality.NDVI, ("NDVI",), "", (-1.0, 1.0), "ndvi",
        "Normalised difference vegetation index",
    ),
    Modality.LULC: ModalityInfo(
        Modality.LULC, ("LULC",), "class", (0.0, 9.0), "lulc", "Land use / land cover",
    ),
}

@dataclass(frozen=True)
class UncertaintyInfo:
    """One ``[U]`` layer of a seed ensemble (see :mod:`inference.ensembles`).

    Attributes:
        suffix: Appended to the output's key: ``S1GRD_STD``, ``LULC_AGREEMENT``.
        statistic: ``"std"``, ``"agreement"`` or ``"entropy"``.
        units: Units of the values; ``None`` for the output's own units (a std of dB is dB).
        long_name: What it is, for legends and GeoTIFF tags (after the output's long name).
        display_range: (low, high) of the colour stretch; ``None`` to stretch on the values.
    """

    suffix: str
    statistic: str
    units: str | None
    long_name: str
    display_range: tuple[float, float] | None


#: Per-pixel standard deviation of a continuous output over the ensemble's members.
ENSEMBLE_STD = UncertaintyInfo("STD", "std", None, "ensemble standard deviation", None)
#: Share of members voting the mode class.
ENSEMBLE_AGREEMENT = UncertaintyInfo(
    "AGREEMENT", "agreement", "share of members", "ensemble agreement (share of members "
    "voting the mode class)", (0.0, 1.0),
)
#: Entropy of the members' class votes, in bits (0 = unanimous).
ENSEMBLE_ENTROPY = UncertaintyInfo(
    "ENTROPY", "entropy", "bit", "ensemble vote entropy", None,
)


def uncertainty_products(modality: Modality) -> tuple[UncertaintyInfo, ...]:
    """The ``[U]`` layers an ensemble writes for ``modality`` (std, or agreement + entropy)."""
    if MODALITY_INFO[modality].units == "class":
        return (ENSEMBLE_AGREEMENT, ENSEMBLE_ENTROPY)
    return (ENSEMBLE_STD,)


#: Modalities TerraMind can generate from S2L2A in TerraLens.
GENERATABLE: tuple[Modality, ...] = (
    Modality.S1GRD, Modality.S1RTC, Modality.LULC, Modality.NDVI, Modality.DEM,
)


@dataclass(frozen=True)
class LulcClass:
    """One TerraMind LULC class (ESRI/Impact Observatory order, not ESA WorldCover)."""

    index: int
    name: str
    colour: str


#: TerraMind LULC classes; index == position in the model's 10 logits.
LULC_CLASSES: tuple[LulcClass, ...] = (
    LulcClass(0, "No data", "#000000"),
    LulcClass(1, "Water", "#419bdf"),
    LulcClass(2, "Trees", "#397d49"),
    LulcClass(3, "Flooded vegetation", "#7a87c6"),
    LulcClass(4, "Crops", "#e49635"),
    LulcClass(5, "Built area", "#c4281b"),
    LulcClass(6, "Bare ground", "#a59b8f"),
    LulcClass(7, "Snow/ice", "#a8ebff"),
    LulcClass(8, "Clouds", "#616161"),
    LulcClass(9, "Rangeland", "#e3e2c3"),
)
#: Index of the water class in :data:`LULC_CLASSES`.
LULC_WATER = 1
#: Value of "no data" in every class map (generated LULC, predictions): outside the AOI and
#: where the input had no data. No class uses it; GeoTIFFs declare it as their nodata.
CLASS_NODATA = 255

#: Sentinel-2 scene classification (SCL) values that count as cloud or cloud shadow.
SCL_CLOUDY: frozenset[int] = frozenset({3, 8, 9, 10})
#: SCL values that mean "no valid data".
SCL_NODATA: frozenset[int] = frozenset({0})
