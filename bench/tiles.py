"""Bytes to the browser and server time per Layers-page interaction (tiles vs inlined PNGs).

    python bench/tiles.py [RUNS_DIR RUN_ID]

Without arguments it writes the seeded sample run (tests.fixtures.runs, 1.2 km²) to a temp
store. Prints, per layer toggle: the map component's arguments sent to the browser (script +
changing layer group) with tiles, the same with the old inlined PNG overlays, the server time
of one AppTest rerun, and each layer's finest tile zoom and its pixel size. Prints, never asserts.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from streamlit.testing.v1 import AppTest

    from app.layers import display_layers_for, render_png
    from app.runs import RunStore
    from app.tiles import NATIVE_ZOOM_EXTRA, layer_extent
    from tests.fixtures.app_server import map_args

    if len(sys.argv) == 3:
        runs_dir, run_id = Path(sys.argv[1]), sys.argv[2]
    else:
        from tests.fixtures.runs import write_sample_run

        runs_dir = Path(tempfile.mkdtemp(prefix="terralens-bench-")) / "runs"
        _, run = write_sample_run(runs_dir)
        run_id = run.id
    os.environ["TERRALENS_DATA_DIR"] = str(runs_dir.parent)
    run = RunStore(runs_dir).open(run_id)
    layers = display_layers_for(run.load_layers())
    page = Path(__file__).resolve().parent.parent / "pages" / "3_Layers.py"
    at = AppTest.from_file(str(page), default_timeout=120)
    at.session_state["run_id"] = run_id
    at.run()
    print(f"run {run_id}: {len(layers)} display layers")
    print("| toggle | args to browser (tiles) | server s |")
    for layer in layers:
        box = at.checkbox(key=f"w_layer_visible::{layer.name}")
        t0 = time.perf_counter()
        (box.uncheck() if box.value else box.check()).run()
        seconds = time.perf_counter() - t0
        size = sum(len(json.dumps(a)) for a in map_args(at))
        print(f"| {layer.name} | {size / 1000:.1f} kB | {seconds:.2f} |")
    inlined = sum(len(render_png(run.load_layer(x.source), x, max_size=1536).data_url)
                  for x in layers)
    print(f"inlined PNG overlays of all layers (before): {inlined / 1000:.1f} kB per interaction")
    for layer in layers[:1]:
        bounds, zoom = layer_extent(run, layer.source)
        finest = zoom + NATIVE_ZOOM_EXTRA
        lat = (bounds[0][0] + bounds[1][0]) / 2
        metres = 156543.03392 * math.cos(math.radians(lat)) / 2**finest
        print(f"finest tile zoom {finest}: {metres:.1f} m per tile pixel (data: 10 m)")


if __name__ == "__main__":
    main()
