"""AppTest of the Layers page's Reality check panel (the sample run, an unreachable catalog)."""

from __future__ import annotations

from typing import Any

from app.escaping import markdown_text
from app.runs import RunStore
from app.ui.state import W
from tests.fixtures.app_server import page_test


def test_reality_panel_checks_and_shows_results(app_run: Any) -> None:
    at = page_test("3_Layers.py")
    at.session_state["run_id"] = app_run.id
    at.run()
    assert not at.exception
    assert any("Not checked yet" in i.value for i in at.info)
    at.button(key=W.REALITY_RUN).click().run()
    assert not at.exception, at.exception
    run = RunStore(app_run.path.parent).open(app_run.id)
    assert "R_NDVI" in run.layer_names
    # The catalog is unreachable: DEM, LULC and S1GRD say so; NDVI is compared.
    warnings = " ".join(w.value for w in at.warning)
    assert "DEM:" in warnings and "LULC:" in warnings and "S1GRD:" in warnings
    assert "NDVI" in " ".join(str(df.value) for df in at.dataframe)
    charts = at.get("vega_lite_chart")
    assert charts, "the generated-vs-real histogram is drawn"
    labels = " ".join(c.label for c in at.checkbox)
    assert markdown_text("[R] NDVI") in labels and markdown_text("[D] NDVI G − R") in labels
