"""Building models from weight sources: offline failures, local folders, a pre-filled cache,
the phases reported while building, parallel loading equal to sequential loading."""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from pathlib import Path

import pytest

from inference.build import HASH_PHASE, load_generation_model
from inference.errors import WeightsUnavailableError
from inference.modalities import Modality
from inference.speed import SpeedOptions
from inference.weights import required_weight_files, weights_label


def test_required_files_are_the_hub_names() -> None:
    files = required_weight_files(
        "terramind_v1_base_generate", modalities=["S2L2A"], output_modalities=["S1GRD", "LULC"]
    )
    assert [(f.repo_id, f.filename) for f in files] == [
        ("ibm-esa-geospatial/TerraMind-1.0-base", "TerraMind_v1_base.pt"),
        ("ibm-esa-geospatial/TerraMind-1.0-Tokenizer-S1GRD", "TerraMind_Tokenizer_S1GRD.pt"),
        ("ibm-esa-geospatial/TerraMind-1.0-Tokenizer-LULC", "TerraMind_Tokenizer_LULC.pt"),
    ]
    assert weights_label("hub", "base") == "hub:ibm-esa-geospatial/TerraMind-1.0-base"
    assert weights_label("untrained", "tiny") == "untrained"


@pytest.fixture()
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, offline."""
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return home


def test_hub_weights_offline_fail_fast_with_advice(empty_hf_cache: Path) -> None:
    import terratorch.registry  # noqa: F401  (import cost is not what this test measures)

    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        load_generation_model("tiny", ["S1GRD", "LULC"], weights="hub", device="cpu")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "TERRALENS_WEIGHTS" in message and "HF_HOME" in message
    for name in ("v1_tiny.pt", "Tokenizer_S1GRD.pt", "Tokenizer_LULC.pt"):
        assert f"TerraMind_{name}" in message
    assert isinstance(info.value, FileNotFoundError)


def test_local_dir_missing_files_are_listed(tmp_path: Path) -> None:
    (tmp_path / "TerraMind_v1_tiny.pt").write_bytes(b"")
    with pytest.raises(WeightsUnavailableError, match=r"TerraMind_Tokenizer_DEM\.pt") as info:
        load_generation_model("tiny", ["DEM"], weights=str(tmp_path), device="cpu")
    assert "TerraMind_v1_tiny.pt" not in str(info.value).split("Missing:")[1]
    with pytest.raises(WeightsUnavailableError, match="not a directory"):
        load_generation_model("tiny", ["DEM"], weights=str(tmp_path / "nope"), device="cpu")


# ---------------------------------------------------------------------------------------------
# Real weights round trip: write the untrained model's weights in the hub's layout, load them
# from a local folder and from a pre-filled offline HF cache, compare every tensor.


@pytest.fixture(scope="module")
def hub_layout_files(tiny_lulc_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    root = tmp_path_factory.mktemp("weights")
    module = tiny_lulc_model.module
    prefix = "sampler.model."
    model_state = {
        k.removeprefix(prefix): v for k, v in module.state_dict().items() if k.startswith(prefix)
    }
    torch.save(model_state, root / "TerraMind_v1_tiny.pt")
    torch.save(module.tokenizer["tok_lulc@224"].state_dict(), root / "TerraMind_Tokenizer_LULC.pt")
    return root


def _assert_same_weights(a, b) -> None:
    import torch

    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.model
def test_local_weights_are_really_loaded(tiny_lulc_model, hub_layout_files: Path) -> None:
    import torch

    torch.manual_seed(99)  # a different random init than the fixture's
    loaded = load_generation_model("tiny", ["LULC"], weights=str(hub_layout_files), device="cpu")
    try:
        assert loaded.weights_label == f"local:{hub_layout_files.resolve()}"
        assert not loaded.untrained
        assert loaded.outputs == (Modality.LULC,)
        assert list(loaded.module.tokenizer) == ["tok_lulc@224"]  # only requested tokenizers
        _assert_same_weights(loaded, tiny_lulc_model)
    finally:
        loaded.unload()
    assert not loaded.loaded


@pytest.mark.model
def test_prefilled_hf_cache_loads_offline(
    tiny_lulc_model, hub_layout_files: Path, empty_hf_cache: Path
) -> None:
    import torch

    commit = "0" * 40
    digests: dict[str, str] = {}
    for repo, name in [
        ("TerraMind-1.0-tiny", "TerraMind_v1_tiny.pt"),
        ("TerraMind-1.0-Tokenizer-LULC", "TerraMind_Tokenizer_LULC.pt"),
    ]:
        repo_dir = empty_hf_cache / "hub" / f"models--ibm-esa-geospatial--{repo}"
        (repo_dir / "refs").mkdir(parents=True)
        (repo_dir / "refs" / "main").write_text(commit)
        snapshot = repo_dir / "snapshots" / commit
        snapshot.mkdir(parents=True)
        # As huggingface_hub stores large files: blobs/<sha256>, linked from the snapshot.
        digest = hashlib.sha256((hub_layout_files / name).read_bytes()).hexdigest()
        (repo_dir / "blobs").mkdir()
        shutil.copyfile(hub_layout_files / name, repo_dir / "blobs" / digest)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", digest))
        digests[name] = digest
    torch.manual_seed(7)
    loaded = load_generation_model("tiny", ["LULC"], weights="hub", device="cpu")
    try:
        assert loaded.weights_label == "hub:ibm-esa-geospatial/TerraMind-1.0-tiny"
        _assert_same_weights(loaded, tiny_lulc_model)
        records = {r.filename: (r.sha256, r.revision) for r in loaded.weight_files}
        assert records == {name: (digest, commit) for name, digest in digests.items()}
    finally:
        loaded.unload()


def test_unreachable_hub_is_not_waited_on(empty_hf_cache: Path, monkeypatch) -> None:
    """Online mode but the hub does not answer: fail in seconds, not after minutes of retries."""
    import terratorch.registry  # noqa: F401  (import cost is not what this test measures)
    from huggingface_hub import constants

    import inference.weights

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    # A closed local port stands in for an unreachable hub (no traffic leaves the machine).
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    assert not inference.weights.hub_reachable()
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match="unreachable"):
        load_generation_model("tiny", ["NDVI"], weights="hub", device="cpu")
    assert time.monotonic() - start < 10


@pytest.mark.model
@pytest.mark.parametrize("workers", [1, 2])
def test_build_phases_are_reported_in_order_from_the_calling_thread(
    hub_layout_files: Path, workers: int
) -> None:
    """The phases a UI shows while a model loads: each named once, in order, on the caller's
    thread, and timed in ``load_phases``."""
    seen: list[tuple[str, int]] = []
    loaded = load_generation_model(
        "tiny", ["LULC"], weights=str(hub_layout_files), device="cpu",
        progress=lambda phase: seen.append((phase, threading.get_ident())),
        speed=SpeedOptions(load_workers=workers),
    )
    try:
        phases = [phase for phase, _ in seen]
        assert phases == [
            "importing terratorch",
            "resolving weight files",
            "building terramind_v1_tiny_generate (no random init)",
            HASH_PHASE,
            "loading tokenizer tok_lulc@224",
            "loading TerraMind_v1_tiny.pt",
            "moving to cpu",
            "applying speed options",
        ]
        assert {thread for _, thread in seen} == {threading.get_ident()}
        assert set(loaded.load_phases) == set(phases)
        assert all(seconds >= 0 for seconds in loaded.load_phases.values())
        assert loaded.speed.load_workers == workers
    finally:
        loaded.unload()


def test_load_workers_from_the_environment() -> None:
    from inference.errors import InvalidRequestError

    assert SpeedOptions.from_env({}).load_workers == 2
    assert SpeedOptions.from_env({"TERRALENS_LOAD_WORKERS": "1"}).load_workers == 1
    assert SpeedOptions.reference().load_workers == 1
    for bad in ("0", "-1", "two", "1.5", "99"):
        with pytest.raises(InvalidRequestError, match="TERRALENS_LOAD_WORKERS"):
            SpeedOptions.from_env({"TERRALENS_LOAD_WORKERS": bad})
