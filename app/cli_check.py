"""``terralens check RUN_DIR``: a run's generated layers against real measurements.

Finds the real counterparts on the catalog, stores the ``[R]``/``[D]`` layers and metrics with
the run (as the Layers page does) and writes the metrics as JSON to ``--out``; prints one line
per layer on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.reality import DEFAULT_S1_DAYS, check_run
from app.reality_report import save_report
from app.runs import RunStore
from app.settings import load_settings
from inference.errors import InvalidRequestError


def cmd_check(args: argparse.Namespace) -> int:
    """Run ``terralens check``."""
    settings = load_settings()
    run_dir = Path(args.run_dir)
    if not (run_dir / "item.json").is_file():
        raise InvalidRequestError(f"{str(run_dir)!r} is not a run folder (no item.json); pass "
                                  "the folder `terralens generate` printed")
    store = RunStore(run_dir.resolve().parent)
    run = store.open(run_dir.resolve().name)
    report = check_run(run, stac_url=args.stac_url or settings.stac_url, s1_days=args.s1_days,
                       timeout_s=settings.stac_timeout_s,
                       has_pc_key=bool(settings.pc_subscription_key))
    save_report(store, run, report)
    out = Path(args.out)
    try:
        out.write_text(report.to_json(), encoding="utf-8")
    except OSError as err:
        raise InvalidRequestError(f"cannot write {str(out)!r}: {err}") from err
    for check in report.checks:
        if check.message:
            print(f"{check.layer}: {check.message}", file=sys.stderr)
            continue
        for band, m in check.metrics.items():
            summary = (f"accuracy {m['overall_accuracy']:.3f}, kappa {m['kappa']}"
                       if check.kind == "classes" else
                       f"bias {m['bias']}, RMSE {m['rmse']}, r {m['pearson_r']}")
            print(f"{check.layer} {band}: {summary} ({m['pixels']} px)", file=sys.stderr)
    print(out)
    return 0


def add_check(subparsers: Any) -> None:
    """Register ``terralens check``."""
    parser = subparsers.add_parser(
        "check", help="compare a run's generated layers with real measurements",
        description="Compare a run's generated layers with their real counterparts on the "
                    "catalog (DEM, land cover, Sentinel-1, the input's NDVI).")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder")
    parser.add_argument("--stac-url", default=None, metavar="URL",
                        help="STAC API root (default: TERRALENS_STAC_URL or Planetary Computer)")
    parser.add_argument("--s1-days", type=int, default=DEFAULT_S1_DAYS, metavar="N",
                        help="Sentinel-1 search window, ± days (default: %(default)s)")
    parser.add_argument("--out", required=True, metavar="FILE.json", help="metrics file")
    parser.set_defaults(func=cmd_check)
