"""The run store: every run is a folder of Cloud-Optimised GeoTIFFs plus a STAC Item.

A :class:`~app.run_request.RunRequest` is hashed into a content key; the run folder is named by
that key, so the same request is answered from the store at once (:meth:`RunStore.find`). What
a stored run offers is :class:`~app.stored_run.Run`; its Item is built by :mod:`app.run_item`,
the crash-safe folder handling is :mod:`app.atomic_files`. Layout::

    <root>/catalog.json            STAC Catalog linking every run's item (browsable by STAC tools)
    <root>/<key>/item.json         STAC Item: geometry = AOI, datetime = scene time,
                                   properties = request + provenance, one asset per GeoTIFF
    <root>/<key>/<layer>.tif       one COG per layer (app.rasters.write_cog)
    <root>/<key>/input.tif         the model input, when saved

Runs are written atomically: into ``<root>/.tmp-<key>-<pid>-<random>``, every file fsync'ed,
then renamed to ``<root>/<key>``. The first writer wins: a run is never replaced by a second
save of the same request (that save keeps the published run and drops its own copy), so a
reader never sees a half-written or half-replaced run. A half-written run (a ``.tmp-*`` folder,
or a folder without ``item.json``) is never listed, found or opened, and
:meth:`RunStore.sweep` removes the temporary folders of writers that died.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pystac
import xarray as xr

from app import atomic_files
from app.atomic_files import TMP_PREFIX, TRASH_PREFIX, fsync_dir, fsync_file, publish, temp_name
from app.rasters import jsonable, write_cog
from app.run_item import (
    CATALOG_FILE,
    FILE_MEDIA_TYPES,
    INPUT_LAYER,
    ITEM_FILE,
    catalog_dict,
    file_asset,
    item_dict,
    layer_asset,
    parse_datetime,
    raster_assets,
)
from app.run_request import RunRequest
from app.stored_run import Run
from inference.errors import InvalidRequestError, RunStoreError

log = logging.getLogger(__name__)

_LAYER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_RESERVED = frozenset({"item", "catalog", "readme"})


class RunStore:
    """A folder of runs (see the module docstring for the layout).

    Args:
        root: The store's folder; created when missing.

    Raises:
        RunStoreError: the folder cannot be created.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunStoreError(
                f"cannot create the run store at {str(self.root)!r} ({err}); set "
                "TERRALENS_DATA_DIR to a writable folder"
            ) from err

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    # -- reading --
    def _read_run(self, folder: Path) -> Run:
        item_path = folder / ITEM_FILE
        try:
            data = json.loads(item_path.read_text(encoding="utf-8"))
            item = pystac.Item.from_dict(data, preserve_dict=False)
            props = item.properties
            request = RunRequest.from_dict(props["terralens:request"])
            created = parse_datetime(props.get("created"))
        except (OSError, ValueError, KeyError, TypeError, pystac.STACError) as err:
            raise RunStoreError(
                f"run {folder.name!r} in {str(self.root)!r} is unreadable ({err}); delete the "
                "folder or re-run the request"
            ) from err
        if created is None:
            raise RunStoreError(f"run {folder.name!r} has no valid 'created' time")
        missing = [k for k in raster_assets(item) if not (folder / f"{k}.tif").is_file()]
        missing += [k for k in item.assets if k not in raster_assets(item)
                    and not (folder / k).is_file()]
        if missing:
            raise RunStoreError(f"run {folder.name!r} is incomplete: missing layers {missing!r}")
        return Run(id=folder.name, path=folder, created=created, request=request, item=item)

    def _folder(self, run_id: str) -> Path:
        if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
            raise RunStoreError(
                f"{run_id!r} is not a run id (letters, digits, '_' or '-', as listed by the store)"
            )
        return self.root / run_id

    def open(self, run_id: str) -> Run:
        """The run with this id.

        Raises:
            RunStoreError: no such run, or it is incomplete or unreadable.
        """
        folder = self._folder(run_id)
        if not (folder / ITEM_FILE).is_file():
            raise RunStoreError(
                f"no run {run_id!r} in {str(self.root)!r}; pick one from the Runs page or "
                "start it again"
            )
        return self._read_run(folder)

    def find(self, request: RunRequest) -> Run | None:
        """The stored run answering ``request``, or ``None`` (one file read, no scan)."""
        folder = self.root / request.key
        if not (folder / ITEM_FILE).is_file():
            return None
        try:
            run = self._read_run(folder)
        except RunStoreError as err:
            log.warning("ignoring unreadable run %s: %s", folder, err)
            return None
        return run if run.request == request else None

    def list_runs(self) -> list[Run]:
        """Every complete run, newest first (unreadable folders are skipped with a warning)."""
        runs = []
        for folder in self.root.iterdir():
            if folder.name.startswith(".") or not (folder / ITEM_FILE).is_file():
                continue
            try:
                runs.append(self._read_run(folder))
            except RunStoreError as err:
                log.warning("skipping run folder %s: %s", folder, err)
        return sorted(runs, key=lambda r: (r.created, r.id), reverse=True)

    # -- writing --
    def save(
        self,
        request: RunRequest,
        layers: Mapping[str, xr.DataArray],
        *,
        provenance: Mapping[str, Any],
        input_layer: xr.DataArray | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> Run:
        """Store a run atomically; a run already stored for the same request is kept and
        returned (first writer wins).

        Args:
            request: The request the layers answer.
            layers: Output rasters by name (``"S1GRD"``, ``"LULC"``...), raster contract.
            provenance: Model, weights, timesteps, seed, scene id, offset applied, flags...
                (JSON-able values; ``datetime`` is the scene time and becomes the Item's).
            input_layer: The model input (e.g. the S2L2A scene) to keep as ``input.tif``.
            files: Other files of the run by file name (vector exports, tables), written
                beside the COGs and listed as assets of the Item.

        Returns:
            The stored run.

        Raises:
            InvalidRequestError: no layers, a bad layer name or a raster off the contract.
            RunStoreError: the files cannot be written.
        """
        if not isinstance(request, RunRequest):
            raise InvalidRequestError(f"request must be a RunRequest, got {request!r}")
        if not layers:
            raise InvalidRequestError("a run needs at least one layer to save")
        all_layers = dict(layers)
        for name in all_layers:
            if not isinstance(name, str) or not _LAYER_NAME.match(name) or \
                    name.lower() in _RESERVED or name == INPUT_LAYER:
                raise InvalidRequestError(
                    f"layer name {name!r} cannot be a file name; use letters, digits, '_', "
                    f"'-' or '.' (and not {sorted(_RESERVED | {INPUT_LAYER})!r})"
                )
        if input_layer is not None:
            all_layers[INPUT_LAYER] = input_layer
        extra_files = dict(files or {})
        for file_name in extra_files:
            stem, _, suffix = file_name.rpartition(".")
            if not _LAYER_NAME.match(file_name) or suffix not in FILE_MEDIA_TYPES or \
                    stem.lower() in _RESERVED:
                raise InvalidRequestError(
                    f"run file name {file_name!r} is not allowed; use letters, digits, '_', "
                    f"'-' or '.' and one of {sorted(FILE_MEDIA_TYPES)!r}")
        for name, da in all_layers.items():
            if not isinstance(da, xr.DataArray):
                raise InvalidRequestError(f"layer {name!r} must be an xarray.DataArray, "
                                          f"got {type(da).__name__}")
        prov = {str(k): jsonable(v) for k, v in provenance.items()}
        created = dt.datetime.now(dt.UTC)
        run_id = request.key
        existing = self.find(request)
        if existing is not None:
            return existing  # first writer wins
        tmp = self.root / temp_name(TMP_PREFIX, run_id)
        try:
            tmp.mkdir()
            for name, da in all_layers.items():
                fsync_file(write_cog(da, tmp / f"{name}.tif"))
            for file_name, data in extra_files.items():
                (tmp / file_name).write_bytes(data)
                fsync_file(tmp / file_name)
            item = item_dict(run_id, request, all_layers, prov, created)
            for file_name in extra_files:
                item["assets"][file_name] = file_asset(file_name)
            item_path = tmp / ITEM_FILE
            item_path.write_text(json.dumps(item, indent=1), encoding="utf-8")
            fsync_file(item_path)
            fsync_dir(tmp)
            published = publish(tmp, self.root / run_id, complete=ITEM_FILE)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RunStoreError(
                f"cannot save run {run_id!r} in {str(self.root)!r} ({err}); check free disk "
                "space and permissions"
            ) from err
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if published:
            self._write_catalog()
        return self.open(run_id)

    def sweep(self) -> list[str]:
        """Remove temporary and trash folders whose writer process is gone
        (:func:`app.atomic_files.sweep`).

        Returns:
            The names removed.
        """
        return atomic_files.sweep(self.root)

    def update(
        self,
        run_id: str,
        layers: Mapping[str, xr.DataArray],
        *,
        properties: Mapping[str, Any] | None = None,
        files: Mapping[str, bytes] | None = None,
        remove: Iterable[str] = (),
    ) -> Run:
        """Add layers, files and Item properties to a stored run (e.g. a reality check).

        The request, and so the run id, stay the same. Each file is written under a temporary
        name and renamed into place, then ``item.json`` is replaced atomically (with an
        ``updated`` time); the run's outputs are never touched.

        Args:
            run_id: The run.
            layers: New or replacing layers by name (raster contract).
            properties: Item properties to set.
            files: Other files by file name (as in :meth:`save`).
            remove: Names of added layers to drop (their assets and COGs).

        Raises:
            RunStoreError: no such run, or the files cannot be written.
            InvalidRequestError: a bad layer or file name, or a name that is an output of the
                run itself.
        """
        run = self.open(run_id)
        originals = {k for k, a in run.item.assets.items() if a.extra_fields.get(
            "terralens:kind") in ("input", "generated", "prediction", "uncertainty")}
        for name in [*layers, *remove]:
            if not isinstance(name, str) or not _LAYER_NAME.match(name) or \
                    name.lower() in _RESERVED or name == INPUT_LAYER or name in originals:
                raise InvalidRequestError(f"layer name {name!r} cannot be added to run {run_id!r}")
        for file_name in files or {}:
            stem, _, suffix = file_name.rpartition(".")
            if not _LAYER_NAME.match(file_name) or suffix not in FILE_MEDIA_TYPES or \
                    stem.lower() in _RESERVED:
                raise InvalidRequestError(f"run file name {file_name!r} is not allowed")
        item = json.loads((run.path / ITEM_FILE).read_text(encoding="utf-8"))
        tag = uuid.uuid4().hex[:8]
        try:
            for name, da in layers.items():
                tmp = run.path / f"{TMP_PREFIX}{name}-{tag}.tif"
                fsync_file(write_cog(da, tmp))
                os.replace(tmp, run.path / f"{name}.tif")
                item["assets"][name] = layer_asset(name, da).to_dict()
            for file_name, data in (files or {}).items():
                tmp = run.path / f"{TMP_PREFIX}{file_name}-{tag}"
                tmp.write_bytes(data)
                fsync_file(tmp)
                os.replace(tmp, run.path / file_name)
                item["assets"][file_name] = file_asset(file_name)
            item["properties"].update({str(k): jsonable(v) for k, v in
                                       (properties or {}).items()})
            item["properties"]["updated"] = dt.datetime.now(dt.UTC).isoformat()
            for name in remove:
                item["assets"].pop(name, None)
            tmp_item = run.path / f"{TMP_PREFIX}{ITEM_FILE}-{tag}"
            tmp_item.write_text(json.dumps(item, indent=1), encoding="utf-8")
            fsync_file(tmp_item)
            os.replace(tmp_item, run.path / ITEM_FILE)
            for name in remove:
                (run.path / f"{name}.tif").unlink(missing_ok=True)
            fsync_dir(run.path)
        except OSError as err:
            for leftover in run.path.glob(f"{TMP_PREFIX}*-{tag}*"):
                leftover.unlink(missing_ok=True)
            raise RunStoreError(f"cannot update run {run_id!r} ({err}); check free disk space "
                                "and permissions") from err
        return self.open(run_id)

    def delete(self, run_id: str) -> None:
        """Remove a run (it disappears from listings at once, then its files are deleted).

        Raises:
            RunStoreError: no such run, or it cannot be removed.
        """
        folder = self._folder(run_id)
        if not folder.is_dir():
            raise RunStoreError(f"no run {run_id!r} in {str(self.root)!r} to delete")
        trash = self.root / temp_name(TRASH_PREFIX, run_id)
        try:
            os.rename(folder, trash)
        except OSError as err:
            raise RunStoreError(f"cannot delete run {run_id!r}: {err}") from err
        shutil.rmtree(trash, ignore_errors=True)
        self._write_catalog()

    def _write_catalog(self) -> None:
        """Rewrite ``catalog.json`` (atomically) from the runs on disk."""
        catalog = catalog_dict(folder.name for folder in sorted(self.root.iterdir())
                               if not folder.name.startswith(".")
                               and (folder / ITEM_FILE).is_file())
        tmp = self.root / temp_name(TMP_PREFIX, CATALOG_FILE)
        try:
            tmp.write_text(json.dumps(catalog, indent=1), encoding="utf-8")
            os.replace(tmp, self.root / CATALOG_FILE)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            log.warning("could not update %s: %s", self.root / CATALOG_FILE, err)
