"""What the server keeps in memory stays within its settings: the layer cache, the layers a
session adds, the models held; an unloaded model is garbage; freed heap goes back."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import numpy as np
import pytest
import xarray as xr

from app.layers import RenderedLayer
from app.memory import BytesLRU, keep_newest, limit_arenas, nbytes, rss_mb, trim_heap
from app.model_manager import GENERATION, ModelKey, ModelManager

MB = 2**20


def _array(mb: float) -> xr.DataArray:
    return xr.DataArray(np.zeros(int(mb * MB), dtype=np.uint8), dims=("x",))


def test_sizes_of_arrays_pngs_and_run_layers() -> None:
    assert nbytes(_array(2)) == 2 * MB
    assert nbytes({"input": _array(1), "LULC": _array(0.5)}) == int(1.5 * MB)
    png = RenderedLayer(png=b"\x89PNG" + bytes(996), bounds=((0, 0), (1, 1)), width=1, height=1)
    assert nbytes(png) == 1000
    assert nbytes(b"abc") == 3


def test_layer_cache_stays_within_its_bytes_evicting_the_least_recently_used() -> None:
    cache: BytesLRU[Any] = BytesLRU(10 * MB)
    for name in "abcd":
        cache.put(name, _array(3))
    assert cache.bytes == 9 * MB and len(cache) == 3 and "a" not in cache
    assert cache.get("b") is not None  # b is now the most recently used
    cache.put("e", _array(3))
    assert "c" not in cache and {"b", "d", "e"} == {k for k in "bde" if k in cache}
    assert cache.bytes <= cache.max_bytes
    big = cache.put("huge", _array(11))  # larger than the whole budget: returned, not kept
    assert big.nbytes == 11 * MB and "huge" not in cache and cache.bytes == 9 * MB


def test_layer_cache_respects_its_entry_count_and_computes_once() -> None:
    cache: BytesLRU[Any] = BytesLRU(100 * MB, max_entries=2)
    calls: list[str] = []
    for key in ("a", "a", "b", "c", "a"):
        cache.get_or_create(key, lambda key=key: calls.append(key) or b"x")
    assert calls == ["a", "b", "c", "a"] and cache.misses == 4
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def test_layers_added_in_a_session_keep_the_newest_within_the_budget() -> None:
    added = {"first": _array(2), "second": _array(2), "third": _array(2)}
    kept, dropped = keep_newest(added, 5 * MB)
    assert list(kept) == ["second", "third"] and dropped == ["first"]
    kept, dropped = keep_newest({"alone": _array(9)}, 5 * MB)  # just asked for: kept anyway
    assert list(kept) == ["alone"] and dropped == []


def test_page_caches_take_their_bounds_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamlit as st

    from app.ui import layers_view, runtime

    monkeypatch.setenv("TERRALENS_LAYER_CACHE_MB", "3")
    monkeypatch.setenv("TERRALENS_MAX_MODELS", "2")
    st.cache_resource.clear()
    try:
        assert layers_view.layer_cache().max_bytes == 3 * MB
        assert runtime.model_manager().capacity == 2
    finally:
        st.cache_resource.clear()


def test_heap_is_trimmed_and_arenas_capped_on_glibc() -> None:
    import platform

    assert rss_mb() > 0
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim and M_ARENA_MAX are glibc's")
    assert limit_arenas(2)
    blocks = [bytearray(64 * 1024) for _ in range(4000)]  # 256 MB of small heap blocks
    del blocks
    gc.collect()
    trim_heap()  # returns True when it released something; either way it must not fail
    assert rss_mb() > 0


@pytest.mark.model
def test_an_evicted_model_is_garbage_and_the_manager_holds_at_most_its_capacity() -> None:
    from inference.build import load_generation_model

    refs: list[weakref.ref[Any]] = []

    def loader(key: ModelKey) -> Any:
        model = load_generation_model("tiny", ["LULC"], weights="untrained", device="cpu",
                                      timesteps=1)
        refs.append(weakref.ref(model.module))
        return model

    manager = ModelManager(loader, capacity=1)
    first = ModelKey(GENERATION, size="tiny", outputs=("LULC",), weights="untrained",
                     device="cpu")
    second = ModelKey(GENERATION, size="tiny", outputs=("LULC",), weights="untrained",
                      device="auto")
    with manager.use(first) as model:
        assert model.loaded
    del model
    with manager.use(second):
        assert manager.loaded() == [second]
    gc.collect()
    assert refs[0]() is None  # the evicted model's module is gone
    assert refs[1]() is not None
    manager.clear()
    gc.collect()
    assert manager.loaded() == [] and refs[1]() is None
