"""Reality check: metrics against values computed independently here, the check of a stored
run (NDVI against its own input, a missing counterpart's message), [R]/[D] layers stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.layers import display_layers_for
from app.metrics import class_metrics, continuous_metrics
from app.reality import check_run
from app.reality_report import ITEM_PROPERTY, METRICS_CSV, METRICS_JSON, save_report
from tests.fixtures.runs import write_sample_run
from tests.fixtures.stac_api import closed_port_url


def test_continuous_metrics_match_independent_values() -> None:
    rng = np.random.default_rng(1)
    real = rng.normal(300.0, 40.0, (60, 70))
    noise = rng.normal(0.0, 5.0, real.shape)
    generated = real + 12.0 + noise
    valid = np.ones(real.shape, dtype=bool)
    valid[:, :5] = False
    m = continuous_metrics(generated, real, valid)
    d = (generated - real)[valid]
    assert m["pixels"] == valid.sum()
    assert m["bias"] == pytest.approx(d.mean())
    assert m["mae"] == pytest.approx(np.abs(d).mean())
    assert m["rmse"] == pytest.approx(np.sqrt((d**2).mean()))
    assert m["pearson_r"] == pytest.approx(np.corrcoef(generated[valid], real[valid])[0, 1])
    assert m["within_1std"] == pytest.approx((np.abs(d) <= real[valid].std()).mean())
    assert m["bias"] == pytest.approx(12.0, abs=0.5)
    same = continuous_metrics(real, real, None)
    assert same["ssim"] == pytest.approx(1.0) and same["rmse"] == 0.0
    assert m["ssim"] < 1.0


def test_class_metrics_of_a_known_confusion() -> None:
    real = np.repeat(np.array([1, 2, 3]), 100).reshape(10, 30)
    generated = real.copy()
    flat = generated.reshape(-1)
    flat[100:120] = 3  # 20 of class 2 generated as class 3
    m = class_metrics(generated, real, [1, 2, 3], ["a", "b", "c"])
    assert m["confusion"] == [[100, 0, 0], [0, 80, 20], [0, 0, 100]]
    assert m["overall_accuracy"] == pytest.approx(280 / 300)
    pe = (100 * 100 + 100 * 80 + 100 * 120) / 300**2
    assert m["kappa"] == pytest.approx((280 / 300 - pe) / (1 - pe))
    iou = {c["name"]: c["iou"] for c in m["per_class"]}
    f1 = {c["name"]: c["f1"] for c in m["per_class"]}
    assert iou == pytest.approx({"a": 1.0, "b": 0.8, "c": 100 / 120})
    assert f1["b"] == pytest.approx(2 * 80 / 180)


def test_check_compares_ndvi_and_says_what_is_missing(tmp_path: Path) -> None:
    store, run = write_sample_run(tmp_path / "runs")
    report = check_run(run, stac_url=closed_port_url(), s1_days=12, timeout_s=2)
    by_layer = {c.layer: c for c in report.checks}
    assert set(by_layer) == {"S1GRD", "LULC", "NDVI", "DEM"}
    ndvi = by_layer["NDVI"]
    # The sample's generated NDVI is the input's own NDVI: no difference at all.
    assert ndvi.ok and ndvi.metrics["NDVI"]["rmse"] == pytest.approx(0.0, abs=1e-6)
    assert ndvi.metrics["NDVI"]["pearson_r"] == pytest.approx(1.0)
    for name in ("DEM", "LULC", "S1GRD"):
        assert not by_layer[name].ok and by_layer[name].message  # catalog unreachable
    saved = save_report(store, run, report)
    assert saved.id == run.id
    assert {"R_NDVI", "D_NDVI"} <= set(saved.layer_names)
    assert saved.item.properties[ITEM_PROPERTY]["layers"][0]["layer"]
    assert (saved.path / METRICS_JSON).is_file() and (saved.path / METRICS_CSV).is_file()
    names = {layer.name for layer in display_layers_for(saved.load_layers())}
    assert {"[R] NDVI", "[D] NDVI G − R"} <= names
    diff = saved.load_layer("D_NDVI").values
    assert np.nanmax(np.abs(diff)) < 1e-6
    assert "Reality check" in __import__("app.exports").exports.run_readme(saved)


def test_cli_check_writes_the_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from app.cli import main

    _, run = write_sample_run(tmp_path / "runs")
    out = tmp_path / "metrics.json"
    code = main(["check", str(run.path), "--stac-url", closed_port_url(), "--s1-days", "3",
                 "--out", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    ndvi = next(e for e in data["layers"] if e["layer"] == "NDVI")
    assert ndvi["metrics"]["NDVI"]["pearson_r"] == pytest.approx(1.0)
    assert "NDVI NDVI" in capsys.readouterr().err
    assert main(["check", str(tmp_path), "--out", str(out)]) == 2
