"""Errors raised by the app layer: the one TerraLens hierarchy, re-exported.

Pages catch :class:`TerraLensError` once per action and show its message with ``st.error``.
"""

from inference.errors import (
    AssetAccessError,
    CatalogError,
    CheckpointError,
    InvalidAOIError,
    InvalidRequestError,
    OutOfMemoryError,
    RunCancelledError,
    RunStoreError,
    SceneError,
    TerraLensError,
    WeightsUnavailableError,
)

__all__ = [
    "AssetAccessError",
    "CatalogError",
    "CheckpointError",
    "InvalidAOIError",
    "InvalidRequestError",
    "OutOfMemoryError",
    "RunCancelledError",
    "RunStoreError",
    "SceneError",
    "TerraLensError",
    "WeightsUnavailableError",
]
