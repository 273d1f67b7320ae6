"""The TerraLens error hierarchy.

One root, :class:`TerraLensError`. Each subclass also inherits the built-in exception it
refines, so callers that only know Python's built-ins still catch it. Messages are written for
the analyst: they say what was wrong (with the bad value) and what to change.

The hierarchy lives in ``inference`` (the lowest layer, importable anywhere without Streamlit);
Import error classes from here, wherever they are raised or caught.
"""

from __future__ import annotations


class TerraLensError(Exception):
    """Root of every error TerraLens raises on purpose."""


class InvalidRequestError(TerraLensError, ValueError):
    """A request (search, task, parameters) is malformed or out of range."""


class InvalidAOIError(InvalidRequestError):
    """The area of interest is empty, invalid, too large or otherwise unusable."""


class CatalogError(TerraLensError, ConnectionError):
    """The STAC catalog could not be reached or answered with an error."""


class AssetAccessError(TerraLensError, PermissionError):
    """A scene asset could not be read (expired or refused signature, missing file)."""


class SceneError(TerraLensError, ValueError):
    """A scene cannot be used for this AOI (no overlap, all clouds, malformed item)."""


class WeightsUnavailableError(TerraLensError, FileNotFoundError):
    """Model weights are not available (offline, not in the cache, wrong path)."""


class OutOfMemoryError(TerraLensError, MemoryError):
    """The device ran out of memory; the message says which knob to turn down."""


class RunCancelledError(TerraLensError):
    """The analyst cancelled a running task."""


class CheckpointError(TerraLensError, ValueError):
    """A fine-tuned checkpoint cannot be loaded or does not fit the available inputs."""


class RunStoreError(TerraLensError, OSError):
    """A run folder is missing, incomplete or cannot be written."""


class BlockedURLError(InvalidRequestError):
    """A URL leads to an address TerraLens refuses to fetch (private, loopback, metadata)."""


class ExportError(TerraLensError, OSError):
    """A map export or report cannot be drawn (basemap data missing) or written."""


class ClusterError(TerraLensError, ConnectionError):
    """The Ray cluster (``RAY_ADDRESS``) cannot be reached, or lost a task for good."""

