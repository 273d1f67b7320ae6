"""Honest weights: files that do not fill the built model are refused, unreadable files give
the weights error, every file's SHA-256 reaches the outputs, tokenizers are shared, untrained
models are the same in every process, and an unloaded model is freed."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from inference.build import load_generation_model
from inference.errors import WeightsUnavailableError
from inference.modalities import Modality
from tests.fixtures.models import s2_window

REPO = Path(__file__).resolve().parents[1]
PREFIX = "sampler.model."
LULC_FILE = "TerraMind_Tokenizer_LULC.pt"
S1_FILE = "TerraMind_Tokenizer_S1GRD.pt"


def _own(model) -> dict:
    return {
        k.removeprefix(PREFIX): v for k, v in model.module.state_dict().items()
        if k.startswith(PREFIX)
    }


@pytest.fixture(scope="module")
def hub_like_dir(tiny_lulc_model, tiny_s1_model, tmp_path_factory) -> Path:
    """A folder in the hub's layout whose model file holds more modalities than a
    LULC-only (or S1GRD-only) model uses: LULC's transformer plus S1GRD's embeddings."""
    import torch

    from inference.loading import parameters_on_meta

    root = tmp_path_factory.mktemp("hub_like")
    lulc, s1 = _own(tiny_lulc_model), _own(tiny_s1_model)
    merged = dict(lulc) | {k: v for k, v in s1.items() if k not in lulc}
    assert len(merged) > len(lulc) and len(merged) > len(s1)
    # The S1GRD -> LULC chain also conditions on S1GRD tokens: add those embeddings too (the
    # hub file holds every modality's), shaped from a model built without allocating.
    from terratorch.registry import FULL_MODEL_REGISTRY

    with parameters_on_meta():
        chain = FULL_MODEL_REGISTRY.build(
            "terramind_v1_tiny_generate", pretrained=False, modalities=["S2L2A"],
            output_modalities=["S1GRD", "LULC"], timesteps=1,
        )
    generator = torch.Generator().manual_seed(3)
    for key, value in _own(type("M", (), {"module": chain})).items():
        if key not in merged:
            merged[key] = 0.02 * torch.randn(value.shape, generator=generator)
    torch.save(merged, root / "TerraMind_v1_tiny.pt")
    torch.save(tiny_lulc_model.module.tokenizer["tok_lulc@224"].state_dict(), root / LULC_FILE)
    torch.save(tiny_s1_model.module.tokenizer["tok_sen1grd@224"].state_dict(), root / S1_FILE)
    return root


def _copy_with(src: Path, dst: Path, **files: object) -> Path:
    """A copy of the folder ``src`` with some files replaced (bytes, or a state dict)."""
    import torch

    shutil.copytree(src, dst)
    for name, content in files.items():
        target = dst / name.replace("__", ".")
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            torch.save(content, target)
    return dst


@pytest.mark.model
def test_file_with_more_modalities_loads_and_is_recorded(tiny_lulc_model, hub_like_dir) -> None:
    import torch

    model = load_generation_model("tiny", ["LULC"], weights=str(hub_like_dir), device="cpu")
    try:
        got, want = model.module.state_dict(), tiny_lulc_model.module.state_dict()
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in got)
        records = {r.filename: r for r in model.weight_files}
        for name in ("TerraMind_v1_tiny.pt", LULC_FILE):
            digest = hashlib.sha256((hub_like_dir / name).read_bytes()).hexdigest()
            assert records[name].sha256 == digest
            assert records[name].revision is None
        out = _generate_lulc(model)
        files = json.loads(out.attrs["weights_files"])
        assert {f["file"] for f in files} == {"TerraMind_v1_tiny.pt", LULC_FILE}
        assert out.attrs["untrained"] is False
    finally:
        model.unload()


def _generate_lulc(model):
    from inference.generate import GenerationTask, generate

    task = GenerationTask(outputs=(Modality.LULC,), timesteps=1, batch_size=1)
    return generate(model, s2_window(224, 224), task)["LULC"]


@pytest.mark.model
def test_mismatched_backbone_keys_are_refused(tiny_lulc_model, hub_like_dir, tmp_path) -> None:
    own = _own(tiny_lulc_model)
    renamed = {f"backbone.{k}": v for k, v in own.items()}  # another checkpoint's naming
    folder = _copy_with(hub_like_dir, tmp_path / "renamed", TerraMind_v1_tiny__pt=renamed)
    with pytest.raises(WeightsUnavailableError) as info:
        load_generation_model("tiny", ["LULC"], weights=str(folder), device="cpu")
    message = str(info.value)
    assert "TerraMind_v1_tiny.pt" in message
    assert f"{len(own)} of its {len(own)} tensors uninitialised ({len(own)} missing" in message


@pytest.mark.model
def test_shape_mismatch_and_one_missing_tensor_are_counted(
    tiny_lulc_model, hub_like_dir, tmp_path
) -> None:
    import torch

    own = dict(_own(tiny_lulc_model))
    key = next(k for k, v in own.items() if v.ndim == 2)
    own[key] = torch.zeros(3, 3)
    dropped = next(k for k in own if k != key and k.startswith("encoder."))
    del own[dropped]
    folder = _copy_with(hub_like_dir, tmp_path / "bad", TerraMind_v1_tiny__pt=own)
    with pytest.raises(WeightsUnavailableError, match=r"2 of its \d+ tensors uninitialised "
                                                      r"\(1 missing, 1 of another shape"):
        load_generation_model("tiny", ["LULC"], weights=str(folder), device="cpu")
    tok = dict(tiny_lulc_model.module.tokenizer["tok_lulc@224"].state_dict())
    tok.pop(next(iter(tok)))
    folder = _copy_with(hub_like_dir, tmp_path / "bad_tok", TerraMind_Tokenizer_LULC__pt=tok)
    with pytest.raises(WeightsUnavailableError, match=r"TerraMind_Tokenizer_LULC\.pt.*1 missing"):
        load_generation_model("tiny", ["LULC"], weights=str(folder), device="cpu")


def _truncated(path: Path) -> bytes:
    data = path.read_bytes()
    assert zipfile.is_zipfile(path)
    return data[: len(data) // 2]


@pytest.mark.model
@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated", "not_a_dict"])
def test_unreadable_files_give_the_weights_error(hub_like_dir, tmp_path, kind) -> None:
    import pickle

    import torch

    content: object = {
        "garbage": b"\x80\x04not a checkpoint at all" * 100,
        "empty": b"",
        "truncated": _truncated(hub_like_dir / "TerraMind_v1_tiny.pt"),
        "not_a_dict": [torch.zeros(2)],
    }[kind]
    folder = _copy_with(hub_like_dir, tmp_path / kind, TerraMind_v1_tiny__pt=content)
    with pytest.raises(WeightsUnavailableError, match=r"TerraMind_v1_tiny\.pt") as info:
        load_generation_model("tiny", ["LULC"], weights=str(folder), device="cpu")
    assert not isinstance(info.value, pickle.UnpicklingError | EOFError)
    assert "weights_only" not in str(info.value)
    assert "TERRALENS_WEIGHTS" in str(info.value) or "TerraMind checkpoint" in str(info.value)


@pytest.mark.model
def test_tokenizers_are_shared_between_output_sets(hub_like_dir) -> None:
    import gc
    import weakref

    lulc = load_generation_model("tiny", ["LULC"], weights=str(hub_like_dir), device="cpu")
    both = load_generation_model("tiny", ["S1GRD", "LULC"], weights=str(hub_like_dir),
                                 device="cpu", timesteps=1)
    try:
        shared = lulc.module.tokenizer["tok_lulc@224"]
        assert both.module.tokenizer["tok_lulc@224"] is shared
        assert both.outputs == (Modality.S1GRD, Modality.LULC)
    finally:
        ref = weakref.ref(shared)
        del shared
        lulc.unload()
        assert ref() is not None  # still used by the second model
        both.unload()
        gc.collect()
    assert ref() is None  # freed with the last model that used it


@pytest.mark.model
def test_tokenizers_loaded_in_parallel_are_the_files_tensors(
    tiny_lulc_model, tiny_s1_model, hub_like_dir
) -> None:
    """Two tokenizers read on two threads while the files are hashed: every tensor is the
    file's, every file's SHA-256 is recorded, and progress stays on the calling thread."""
    import gc
    import threading

    import torch

    from inference.speed import SpeedOptions

    gc.collect()  # no tokenizer shared from an earlier test: both are read from their files
    threads: set[int] = set()
    model = load_generation_model(
        "tiny", ["S1GRD", "LULC"], weights=str(hub_like_dir), device="cpu", timesteps=1,
        progress=lambda phase: threads.add(threading.get_ident()),
        speed=SpeedOptions(load_workers=2),
    )
    try:
        assert threads == {threading.get_ident()}
        for key, source in (("tok_lulc@224", tiny_lulc_model), ("tok_sen1grd@224", tiny_s1_model)):
            got = model.module.tokenizer[key].state_dict()
            want = source.module.tokenizer[key].state_dict()
            assert got.keys() == want.keys()
            assert all(torch.equal(got[k], want[k]) for k in want), key
        digests = {r.filename: r.sha256 for r in model.weight_files}
        for name in ("TerraMind_v1_tiny.pt", LULC_FILE, S1_FILE):
            assert digests[name] == hashlib.sha256((hub_like_dir / name).read_bytes()).hexdigest()
        assert {"loading tokenizer tok_lulc@224", "loading tokenizer tok_sen1grd@224"} <= set(
            model.load_phases)
    finally:
        model.unload()


_LEAK_SCRIPT = """
import gc, sys, weakref
from inference.build import load_generation_model
model = load_generation_model("tiny", ["LULC"], weights=sys.argv[1], device="cpu", timesteps=1)
module = weakref.ref(model.module)
tokenizer = weakref.ref(model.module.tokenizer["tok_lulc@224"])
model.unload()
gc.collect()
print(module() is None, tokenizer() is None)
"""


@pytest.mark.model
@pytest.mark.parametrize("source", ["untrained", "local"])
def test_first_model_of_a_process_is_freed_after_unload(hub_like_dir, source) -> None:
    weights = str(hub_like_dir) if source == "local" else "untrained"
    out = subprocess.run(
        [sys.executable, "-c", _LEAK_SCRIPT, weights], capture_output=True, text=True,
        cwd=REPO, timeout=300, env=_env(),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["True", "True"]


_SEED_SCRIPT = """
import hashlib, random, torch
from inference.generate import GenerationTask, generate
from inference.build import load_generation_model
from tests.fixtures.models import s2_window
random.seed(); torch.seed()  # whatever the process's RNG state, the init is the same
model = load_generation_model("tiny", ["LULC"], weights="untrained", device="cpu", timesteps=1)
task = GenerationTask(outputs=("LULC",), timesteps=1, seed=5, batch_size=1)
out = generate(model, s2_window(224, 224), task)
print(hashlib.sha256(out["LULC_PROB"].values.tobytes()).hexdigest())
"""


def _env() -> dict[str, str]:
    import os

    return os.environ | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


@pytest.mark.model
def test_untrained_models_are_identical_in_two_processes() -> None:
    digests = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", _SEED_SCRIPT], capture_output=True, text=True, cwd=REPO,
            timeout=300, env=_env(),
        )
        assert out.returncode == 0, out.stderr[-2000:]
        digests.append(out.stdout.split()[-1])
    assert digests[0] == digests[1]
    assert len(digests[0]) == 64
