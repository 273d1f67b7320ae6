"""Small shared Streamlit widgets: the page registry, error display, sidebar, badges.

Pages stay thin by calling these. :func:`guard` is the one place where an action's errors turn
into what the analyst sees: a :class:`~inference.errors.TerraLensError` shows its own message
(written for the analyst), anything else a short message while the traceback goes to the log.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from app.escaping import markdown_code, markdown_text
from app.settings import Settings
from app.ui import state
from inference.errors import TerraLensError
from inference.executors import cluster_summary

logger = logging.getLogger("terralens.ui")

#: Folder of the page scripts (``pages/`` at the repository root).
PAGES_DIR = Path(__file__).resolve().parents[2] / "pages"
#: Shown wherever outputs of random weights appear.
UNTRAINED_WARNING = "Weights: untrained — outputs are noise"


@dataclass(frozen=True)
class PageSpec:
    """One page of the app: its script under ``pages/``, title, icon and URL path."""

    file: str
    title: str
    icon: str
    url_path: str


#: The pages, in navigation order. The first is the default page.
PAGES: dict[str, PageSpec] = {
    "search": PageSpec("1_Search.py", "Search", ":material/travel_explore:", "search"),
    "run": PageSpec("2_Run.py", "Run", ":material/play_circle:", "run"),
    "layers": PageSpec("3_Layers.py", "Layers", ":material/layers:", "layers"),
    "runs": PageSpec("4_Runs.py", "Runs", ":material/history:", "runs"),
    "geolocate": PageSpec("5_Geolocate.py", "Geolocate", ":material/public:", "geolocate"),
}


#: URL path the default page reserves (Streamlit serves it at ``/`` only, never at its own
#: path); its real path (``/search``) is served by a hidden alias, see :func:`navigation_pages`.
DEFAULT_PAGE_RESERVED_PATH = "start"


def page(name: str) -> Any:
    """The ``st.Page`` of a registered page (for ``st.navigation``, links and switching).

    Args:
        name: A key of :data:`PAGES`.
    """
    spec = PAGES[name]
    default = name == next(iter(PAGES))
    return st.Page(
        PAGES_DIR / spec.file,
        title=spec.title,
        icon=spec.icon,
        url_path=DEFAULT_PAGE_RESERVED_PATH if default else spec.url_path,
        default=default,
    )


def navigation_pages() -> list[Any]:
    """The pages for ``st.navigation``: every available page, plus a hidden alias that serves
    the default page at its own path too (``/search`` as well as ``/``)."""
    names = available_pages()
    pages = [page(name) for name in names]
    first = next(iter(PAGES))
    if first in names:
        spec = PAGES[first]
        pages.append(st.Page(PAGES_DIR / spec.file, title=spec.title, icon=spec.icon,
                             url_path=spec.url_path, visibility="hidden"))
    return pages


def available_pages() -> list[str]:
    """Names of the pages whose script exists, in navigation order."""
    return [name for name, spec in PAGES.items() if (PAGES_DIR / spec.file).is_file()]


def page_link(name: str, label: str | None = None) -> None:
    """A link to a registered page (keeps session state, unlike a markdown link)."""
    spec = PAGES[name]
    st.page_link(page(name), label=label or spec.title, icon=spec.icon)


def switch_to(name: str, query_params: dict[str, str] | None = None) -> None:
    """Go to a registered page now (stops the current script run)."""
    st.switch_page(page(name), query_params=query_params)


def rerun_fragment() -> None:
    """Rerun only the fragment this is called from when the run is a fragment rerun, the whole
    page otherwise (Streamlit refuses ``scope="fragment"`` in a full run of the page)."""
    if state.fragment_rerun():
        st.rerun(scope="fragment")
    st.rerun()


def _short(err: BaseException, limit: int = 240) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show_error(err: BaseException, action: str) -> None:
    """Show ``err`` to the analyst: its message for TerraLens errors, a short note otherwise.

    Args:
        err: The exception caught while doing ``action``.
        action: What was being done, e.g. ``"Searching the catalog"``.
    """
    if isinstance(err, TerraLensError):
        st.error(markdown_text(err), icon=":material/error:")
        return
    logger.error("%s failed", action, exc_info=(type(err), err, err.__traceback__))
    st.error(
        markdown_text(f"{action} failed unexpectedly ({type(err).__name__}: {_short(err)}). "
                      "The details are in the server log; please report them."),
        icon=":material/bug_report:",
    )


@contextmanager
def guard(action: str) -> Iterator[None]:
    """Run one analyst action; show its error with :func:`show_error` instead of a traceback.

    Streamlit's own control flow (``st.rerun``, ``st.stop``, ``st.switch_page``) derives from
    ``BaseException`` and passes through untouched.

    Example:
        >>> with guard("Searching the catalog"):   # doctest: +SKIP
        ...     results = search_scenes(request, stac_url=url)
    """
    try:
        yield
    except Exception as err:  # the one place an action's failure is shown
        show_error(err, action)


def synthetic_badge(attrs: dict[str, Any] | None = None) -> None:
    """Mark a layer as generated (synthetic) data; adds the untrained warning when it applies."""
    attrs = attrs or {}
    st.badge("synthetic — generated by TerraMind, not a measurement",
             icon=":material/auto_awesome:", color="orange")
    if attrs.get("untrained"):
        st.badge("untrained — outputs are noise", icon=":material/warning:", color="red")


def weights_label(settings: Settings) -> str:
    """Human description of the configured weight source."""
    if settings.weights == "untrained":
        return UNTRAINED_WARNING
    if settings.weights == "hub":
        return "Weights: Hugging Face hub (downloaded on first use, then cached)"
    return f"Weights: local folder {markdown_code(settings.weights)}"


@st.cache_resource(show_spinner=False)
def device_name(requested: str) -> str:
    """The device a model would run on (imports torch once per process)."""
    from inference.devices import resolve_device

    try:
        return str(resolve_device(requested))
    except TerraLensError as err:
        return f"unavailable ({_short(err, 120)})"


def gpu_memory_text(device: str) -> str | None:
    """``"GPU memory: 3.1 / 79.6 GiB used"`` for a CUDA device, else ``None``."""
    if not device.startswith("cuda"):
        return None
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    try:
        free, total = torch.cuda.mem_get_info(torch.device(device))
    except RuntimeError:
        return None
    gib = 1024**3
    return f"GPU memory: {(total - free) / gib:.1f} / {total / gib:.1f} GiB used"


def sidebar(settings: Settings) -> None:
    """The settings summary in the sidebar: catalog, weights, device and GPU memory, and the Ray
    cluster when ``RAY_ADDRESS`` is set."""
    with st.sidebar:
        st.caption("Settings")
        st.markdown(f"**Catalog**  \n{markdown_code(settings.stac_url)}")
        label = weights_label(settings)
        if settings.weights == "untrained":
            st.warning(label, icon=":material/warning:")
        else:
            st.markdown(label)
        device = "cpu" if settings.device == "cpu" else device_name(settings.device)
        st.markdown(f"**Device** {markdown_code(device)} (asked: {markdown_code(settings.device)})")
        memory = gpu_memory_text(device)
        if memory:
            st.caption(memory)
        ray_address = os.environ.get("RAY_ADDRESS", "").strip()
        if ray_address:
            joined = cluster_summary()
            st.markdown(f"**Ray cluster** {markdown_code(ray_address)}")
            st.caption(f"{joined} · generation and water chips run there" if joined else
                       "joined when the first generation or water run starts")
        st.caption(f"Runs stored in {markdown_code(settings.runs_dir)} · "
                   f"AOI limit {settings.max_aoi_km2:,g} km² (search "
                   f"{settings.max_search_km2:,g} km²)")


def load_settings_or_stop() -> Settings:
    """Settings from the environment; on a bad variable show why and stop the page."""
    from app.settings import load_settings

    try:
        return load_settings()
    except TerraLensError as err:
        st.error(markdown_text(f"TerraLens is misconfigured: {err}"))
        st.stop()
        raise  # pragma: no cover - st.stop() raises


def static_url() -> str:
    """Where this server serves the vendored map assets (honours ``server.baseUrlPath``)."""
    from app.maps import static_url_for

    return static_url_for(str(st.get_option("server.baseUrlPath") or ""))
