"""The view (centre, zoom) of each map, kept in session state across reruns and pages.

A map reports its view (``st_folium(returned_objects=[..., "center", "zoom"])``) after every
pan or zoom; :func:`remember` stores it per map (:data:`app.ui.state.MAP_VIEWS`), under a
*scope* (the run on the Layers page, the AOI on the Search page): a view of another run or AOI
is not reused, so a new one is fitted to its area.

The view goes back to the map as ``st_folium(center=..., zoom=...)``, which moves the map
whenever the value passed *changes*. Passing every reported view straight back would pull the
map back to where it was while the analyst keeps panning during a rerun; so :func:`view_args`
passes a new value only when the map is about to be created anew: when the page was just
entered (another page ran before, see :func:`note_page`) or when the map's script changes (its
``signature``: the component is re-mounted, fitted to its area, and needs the view back).
Otherwise it passes the same value as last time, which the mounted map ignores.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.ui import state

#: What a map must return for its view to be kept.
VIEW_OBJECTS = ["center", "zoom"]


def note_page(page: str) -> None:
    """Record the page this script run shows (called by the entry point before the page)."""
    state.PAGE_BEFORE.set(state.PAGE_NOW.get())
    state.PAGE_NOW.set(page)


def page_entered() -> bool:
    """Whether this script run entered the page from another one (or is the session's first).
    A fragment rerun never does: it runs without the entry point, so :func:`note_page` has not
    moved the pages on, and the map inside the fragment must not be sent its saved view again."""
    if state.fragment_rerun():
        return False
    now = state.PAGE_NOW.get()
    return now is not None and state.PAGE_BEFORE.get() != now


def parse_view(value: Mapping[str, Any] | None) -> tuple[float, float, int] | None:
    """``(lat, lon, zoom)`` from a map's returned value, or ``None`` when it holds no view."""
    if not isinstance(value, Mapping):
        return None
    center, zoom = value.get("center"), value.get("zoom")
    try:
        if isinstance(center, Mapping):
            lat, lon = float(center["lat"]), float(center["lng"])
        elif isinstance(center, list | tuple) and len(center) == 2:
            lat, lon = float(center[0]), float(center[1])
        else:
            return None
        zoom_level = int(zoom)  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        return None
    if not (-90.0 <= lat <= 90.0 and -1e4 <= lon <= 1e4 and 0 <= zoom_level <= 30):
        return None
    return lat, lon, zoom_level


def saved_view(name: str, scope: str) -> tuple[float, float, int] | None:
    """The last view of map ``name`` within ``scope`` (``None``: none yet, fit the area)."""
    saved = state.MAP_VIEWS.get().get(name)
    if saved is None or saved[0] != scope:
        return None
    return saved[1], saved[2], saved[3]


def remember(name: str, scope: str, value: Mapping[str, Any] | None) -> None:
    """Keep the view in a map's returned ``value`` when the map reported a new one (a value
    seen before is ignored, so a :func:`jump` is not undone by the map's last report)."""
    view = parse_view(value)
    seen = dict(state.MAP_VIEWS_SEEN.get())
    if view is None or seen.get(name) == view:
        return
    seen[name] = view
    state.MAP_VIEWS_SEEN.set(seen)
    views = dict(state.MAP_VIEWS.get())
    views[name] = (scope, *view)
    state.MAP_VIEWS.set(views)


def jump(name: str, scope: str, center: tuple[float, float], zoom: int) -> None:
    """Move map ``name`` to ``center`` at ``zoom`` on the next run (e.g. 'Jump to')."""
    views = dict(state.MAP_VIEWS.get())
    views[name] = (scope, float(center[0]), float(center[1]), int(zoom))
    state.MAP_VIEWS.set(views)
    passed = dict(state.MAP_VIEWS_PASSED.get())
    passed.pop(name, None)
    state.MAP_VIEWS_PASSED.set(passed)


def view_args(name: str, scope: str, signature: str) -> dict[str, Any]:
    """``center`` and ``zoom`` for ``st_folium`` (see the module docstring).

    Args:
        name: The map (one per page).
        scope: What the view belongs to (a run id, an AOI).
        signature: What the map's script is built from; a change re-mounts the map.
    """
    passed = dict(state.MAP_VIEWS_PASSED.get())
    last = passed.get(name)
    if last is None or last[0] != (scope, signature) or page_entered():
        view = saved_view(name, scope)
        passed[name] = ((scope, signature), view)
        state.MAP_VIEWS_PASSED.set(passed)
    else:
        view = last[1]
    if view is None:
        return {"center": None, "zoom": None}
    return {"center": (view[0], view[1]), "zoom": view[2]}
