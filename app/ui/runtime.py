"""The job runtime and the model manager, held once per server process (``st.cache_resource``).

Every session of the server shares one :class:`~app.model_manager.ModelManager` and, per run
store, one :class:`~app.jobs.JobRuntime` whose worker thread runs the queue. Clearing
Streamlit's caches (tests, a configuration change) stops the workers and unloads the models.
"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from app.jobs import JobRuntime
from app.memory import limit_arenas, trim_heap
from app.model_manager import ModelManager
from app.settings import Settings, load_settings


def _release_models(models: ModelManager) -> None:
    models.clear()
    trim_heap()


@st.cache_resource(show_spinner=False, on_release=_release_models)
def model_manager() -> ModelManager:
    """The process's model manager (one for every session and run store), holding at most
    ``TERRALENS_MAX_MODELS`` models; also caps the process's malloc arenas
    (``TERRALENS_MALLOC_ARENAS``) once, before the first model is built."""
    settings = load_settings()
    limit_arenas(settings.malloc_arenas)
    return ModelManager(capacity=settings.max_models)


def _shutdown(runtime: JobRuntime) -> None:
    runtime.shutdown()


@st.cache_resource(show_spinner=False, on_release=_shutdown)
def _runtime(key: str, _settings: Settings) -> JobRuntime:
    return JobRuntime(_settings, models=model_manager()).start()


def job_runtime(settings: Settings) -> JobRuntime:
    """The started job runtime of ``settings``' run store (its worker runs in the background)."""
    return _runtime(repr(settings), settings)


def session_id() -> str:
    """This browser session's id (who submitted a job)."""
    ctx = get_script_run_ctx()
    return str(ctx.session_id) if ctx is not None else ""
