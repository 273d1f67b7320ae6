"""Chips on a real local Ray cluster (``ray start --head`` on 127.0.0.1, two CPU workers): the
same bytes as in this process, a killed worker retried, our errors passed back as themselves,
an address nobody answers refused quickly, and ``RAY_ADDRESS`` wired into the CLI's runs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from app.aoi import AOI
from app.cli import main
from inference.errors import ClusterError, SceneError
from inference.executors import RayExecutor, cluster_summary, connect, disconnect
from inference.generate import LULC_PROB, GenerationTask, generate
from tests.fixtures.models import s2_window
from tests.fixtures.processes import stop_group
from tests.fixtures.s2_scenes import SceneSet, utm_box_to_lonlat
from tests.fixtures.stac_api import free_port

pytestmark = [pytest.mark.model]

SCENE = "S2B_T33TWL_20211105_A"  # clear
AOI_UTM = (500_100.0, 4_983_200.0, 502_700.0, 4_985_800.0)  # 260 x 260 px: 4 chips of 224
ROOT = Path(__file__).resolve().parent.parent


def _ray_bin() -> str:
    found = shutil.which("ray", path=str(Path(sys.executable).parent))
    assert found, "the ray command comes with the 'ray' package"
    return found


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A Ray head with two CPU workers on 127.0.0.1 (``ray start --head --block``, in its own
    process group); only that cluster is stopped after the module, and this process leaves it."""
    port = free_port()
    # Ray's socket paths must stay short: a temp dir right under /tmp.
    temp = tempfile.mkdtemp(prefix="tlray", dir="/tmp")
    # Workers import this module's batch functions (and the repository's packages) by name.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    head = subprocess.Popen(
        [_ray_bin(), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
         "--disable-usage-stats", "--temp-dir", temp],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"ray start --head did not come up (exit {head.poll()})")
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        disconnect()
        # --block: SIGTERM makes ray start stop the processes it started, and only those.
        stop_group(head, grace_s=60)
        shutil.rmtree(temp, ignore_errors=True)


def test_generation_on_ray_gives_the_same_bytes_as_in_process(ray_address: str,
                                                              tiny_lulc_model: Any) -> None:
    s2 = s2_window(300, 300, seed=4)
    task = GenerationTask(outputs=("LULC",), timesteps=1, seed=11, chip=128, overlap=32,
                          batch_size=2)
    here = generate(tiny_lulc_model, s2, task)
    chips: list[tuple[int, int]] = []
    on_ray = generate(tiny_lulc_model, s2, task,
                      executor=RayExecutor(ray_address, max_in_flight=2),
                      progress=lambda done, total: chips.append((done, total)))
    assert chips[-1][0] == chips[-1][1] >= 9 and len(chips) >= 5, "several tasks in flight"
    for name in ("LULC", LULC_PROB):
        assert on_ray[name].dtype == here[name].dtype
        assert on_ray[name].values.tobytes() == here[name].values.tobytes(), name
    assert cluster_summary() == "2 CPUs, 0 GPUs on 1 node"


def _dies_once(marker: str, batch: np.ndarray, indices: Any) -> np.ndarray:
    """Kills its own worker process the first time (as an OOM killer would), then works."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return batch * 2


def test_a_worker_killed_mid_task_is_retried_and_the_result_is_unchanged(
        ray_address: str, tmp_path: Path) -> None:
    from functools import partial

    marker = str(tmp_path / "died")
    batches = [(np.full((1, 2, 4, 4), i, dtype=np.float32), [i]) for i in range(4)]
    out = list(RayExecutor(ray_address).map_batches(partial(_dies_once, marker), batches))
    assert Path(marker).exists(), "the first attempt died"
    assert [float(o.max()) for o in out] == [0.0, 2.0, 4.0, 6.0]


def _refuses(batch: np.ndarray, indices: Any) -> np.ndarray:
    raise SceneError("chip 3 has no valid pixel")


def test_our_errors_come_back_from_the_cluster_as_themselves(ray_address: str) -> None:
    batches = [(np.zeros((1, 1, 2, 2), dtype=np.float32), [0])]
    with pytest.raises(SceneError, match="chip 3 has no valid pixel"):
        list(RayExecutor(ray_address).map_batches(_refuses, batches))


def test_an_address_nobody_answers_is_refused_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    disconnect()  # leave a cluster joined by an earlier test: connect() would reuse it
    monkeypatch.setenv("TERRALENS_RAY_TIMEOUT", "2")
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(ClusterError, match=f"No Ray cluster answers at {address}"):
        connect(address)
    assert time.monotonic() - started < 10


def test_cli_generate_with_ray_address_runs_there_and_writes_the_same_cogs(
        ray_address: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stac_api_url: str,
        s2_scene_set: SceneSet, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TERRALENS_STAC_URL", stac_api_url)
    monkeypatch.setenv("TERRALENS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TERRALENS_WEIGHTS", "untrained")
    monkeypatch.setenv("TERRALENS_DEVICE", "cpu")
    w, s, e, n = AOI.from_geojson(utm_box_to_lonlat(*AOI_UTM)).bbox
    args = ["generate", "--item", SCENE, "--bbox", f"{w},{s},{e},{n}", "--outputs", "LULC",
            "--model", "tiny", "--timesteps", "1", "--seed", "5"]
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main([*args, "--out", str(tmp_path / "here")]) == 0, capsys.readouterr().err
    here = Path(capsys.readouterr().out.strip())
    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    assert main([*args, "--out", str(tmp_path / "ray")]) == 0, capsys.readouterr().err
    there = Path(capsys.readouterr().out.strip())
    assert here != there
    for name in ("LULC.tif", "LULC_PROB.tif"):
        with rasterio.open(here / name) as a, rasterio.open(there / name) as b:
            assert {k: v for k, v in a.profile.items() if k != "nodata"} == \
                {k: v for k, v in b.profile.items() if k != "nodata"}
            assert repr(a.nodata) == repr(b.nodata)  # NaN for LULC_PROB: NaN != NaN
            assert a.read().tobytes() == b.read().tobytes(), name
    assert cluster_summary() == "2 CPUs, 0 GPUs on 1 node", "the second run joined the cluster"
    # An address nobody answers: one line on stderr naming it, no traceback, a failing exit.
    disconnect()
    monkeypatch.setenv("TERRALENS_RAY_TIMEOUT", "2")
    dead = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", dead)
    assert main([*args, "--seed", "6", "--out", str(tmp_path / "dead")]) != 0
    err = capsys.readouterr().err
    assert f"terralens: error: No Ray cluster answers at {dead}" in err
    assert "Traceback" not in err


def test_the_sidebar_shows_the_cluster_and_its_gpus(ray_address: str, app_env: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures.app_server import page_test

    def sidebar() -> str:
        at = page_test("main").run()
        assert not at.exception
        return "\n".join([m.value for m in at.sidebar.markdown] +
                         [c.value for c in at.sidebar.caption])

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert "Ray cluster" not in sidebar()
    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    disconnect()
    text = sidebar()
    assert f"**Ray cluster** `{ray_address}`" in text
    assert "joined when the first generation or water run starts" in text
    connect(ray_address)  # what a run does when it starts
    assert "2 CPUs, 0 GPUs on 1 node · generation and water chips run there" in sidebar()
