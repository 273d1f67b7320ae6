"""The ``terralens`` command line.

One function builds each subcommand's parser and one function runs it; to add a subcommand,
write ``_add_<name>(subparsers)`` that calls ``set_defaults(func=...)`` and append it to
:data:`SUBCOMMANDS`. Failures print one line, ``terralens: error: ...``, on stderr and return
exit code 2 for bad input or 1 for catalog/data/model failures; never a traceback. One guard in
:func:`main` catches whatever else escapes (exit 1, one line); ``--debug`` prints the trace
instead, ``-v``/``-vv`` turn on INFO/DEBUG logging, ``--version`` prints the version.

Example:
    terralens search --bbox 15.0,45.0,15.1,45.1 --start 2023-06-01 --end 2023-06-30 --json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from app.catalog import MAX_LIMIT, Collection, SceneSummary, SearchRequest, search_scenes
from app.cli_args import aoi_from_args
from app.cli_check import add_check
from app.cli_report import add_report
from app.cli_tasks import add_generate, add_geolocate, add_segment
from app.cli_weights import add_weights
from app.settings import load_settings
from app.transport import check_seconds
from inference.errors import InvalidRequestError, TerraLensError

PROG = "terralens"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: Options whose value may start with "-" (negative coordinates).
_NEGATIVE_VALUE_OPTIONS = ("--bbox",)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one ``terralens: error:`` line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


def _fail(message: str, stream: TextIO | None = None) -> None:
    text = " ".join(str(message).split())
    print(f"{PROG}: error: {text}", file=stream or sys.stderr)


# -- search ---------------------------------------------------------------------------------------
def _format_table(scenes: Sequence[SceneSummary]) -> str:
    header = ("datetime (UTC)", "id", "cloud %", "AOI %", "tile", "baseline")
    rows = [
        (
            s.datetime.strftime("%Y-%m-%d %H:%M"),
            s.id,
            "-" if s.cloud_cover is None else f"{s.cloud_cover:.1f}",
            f"{s.aoi_coverage:.1f}",
            s.mgrs_tile or "-",
            s.processing_baseline or "-",
        )
        for s in scenes
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_search(args: argparse.Namespace) -> int:
    """Run ``terralens search``: print the scenes over the AOI, oldest first."""
    settings = load_settings()
    aoi = aoi_from_args(args.aoi, args.bbox)
    aoi.validate(**settings.search_limits)  # a search reads no pixels: its own limit
    request = SearchRequest(
        aoi=aoi, start=args.start, end=args.end, collection=args.collection,
        max_cloud=args.max_cloud, limit=args.limit,
    )
    stac_url = args.stac_url or settings.stac_url
    timeout = settings.stac_timeout_s
    if args.timeout is not None:
        timeout = check_seconds(args.timeout, "--timeout")
    scenes = search_scenes(request, stac_url=stac_url, timeout_s=timeout)
    if scenes.skipped:
        print(f"{PROG}: note: skipped {scenes.skipped} malformed item(s) without a datetime "
              f"or geometry: {', '.join(scenes.skipped_ids)}", file=sys.stderr)
    if args.json:
        print(json.dumps([s.to_record() for s in scenes], indent=2))
    elif scenes:
        print(_format_table(scenes))
        print(f"\n{len(scenes)} scene(s) from {stac_url}")
    else:
        print(f"No {request.collection.value} scenes over the AOI between "
              f"{request.start.isoformat()} and {request.end.isoformat()}"
              + (f" with at most {request.max_cloud:g}% cloud cover"
                 if request.collection.has_cloud_cover else "")
              + ".")
    return EXIT_OK


def _add_search(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "search",
        help="search the STAC catalog for scenes over an area",
        description="Search the STAC catalog (Planetary Computer by default) for scenes over "
                    "an AOI. Prints the scenes oldest first.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--bbox", metavar="W,S,E,N",
                       help="AOI as lon/lat degrees, e.g. 15.0,45.0,15.1,45.1")
    where.add_argument("--aoi", metavar="FILE", help="AOI as a GeoJSON or KML file")
    parser.add_argument("--start", required=True, metavar="YYYY-MM-DD",
                        help="first day (UTC, inclusive)")
    parser.add_argument("--end", required=True, metavar="YYYY-MM-DD",
                        help="last day (UTC, inclusive)")
    parser.add_argument("--collection", default=Collection.SENTINEL_2_L2A.value,
                        choices=[c.value for c in Collection],
                        help="STAC collection (default: %(default)s)")
    parser.add_argument("--max-cloud", type=float, default=30.0, metavar="PERCENT",
                        help="largest eo:cloud_cover, Sentinel-2 only (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=50, metavar="N",
                        help=f"most scenes returned, the most recent kept, 1..{MAX_LIMIT} "
                             "(default: %(default)s)")
    parser.add_argument("--stac-url", default=None, metavar="URL",
                        help="STAC API root (default: TERRALENS_STAC_URL or Planetary Computer)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="time-out per catalog request (default: TERRALENS_STAC_TIMEOUT)")
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    parser.set_defaults(func=cmd_search)


#: Parser builders, one per subcommand (append new ones here).
SUBCOMMANDS: list[Callable[[Any], None]] = [
    _add_search, add_generate, add_segment, add_geolocate, add_weights, add_check, add_report,
]


def version() -> str:
    """The installed TerraLens version (``"unknown"`` when run from an uninstalled tree)."""
    try:
        return importlib.metadata.version("terralens")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - always installed
        return "unknown"


def _add_global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="log progress (-v: INFO, -vv: DEBUG) on stderr")
    parser.add_argument("--debug", action="store_true", default=default,
                        help="on an unexpected failure, print the Python traceback")


def build_parser() -> argparse.ArgumentParser:
    """The ``terralens`` parser with every subcommand of :data:`SUBCOMMANDS`.

    ``-v``/``--verbose`` and ``--debug`` are accepted before and after the subcommand.
    """
    parser = _Parser(prog=PROG, description="TerraLens: TerraMind workbench command line.")
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    _add_global_options(parser, default=None)
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    for add in SUBCOMMANDS:
        add(subparsers)
    for sub in subparsers.choices.values():
        _add_global_options(sub, default=argparse.SUPPRESS)
    return parser


def configure_logging(verbosity: int) -> None:
    """Log to stderr: warnings only by default (retries of HTTP requests not even those),
    INFO with ``-v``, DEBUG with ``-vv``."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 \
        else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # urllib3 logs each retry as a warning; the error line already says how it ended.
    logging.getLogger("urllib3").setLevel(logging.ERROR if verbosity <= 0 else logging.NOTSET)


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--bbox -10,5,-9,6`` → ``--bbox=-10,5,-9,6`` (argparse would take it for an option)."""
    out: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        if items[i] in _NEGATIVE_VALUE_OPTIONS and i + 1 < len(items) \
                and items[i + 1].startswith("-") and items[i + 1][1:2].isdigit():
            out.append(f"{items[i]}={items[i + 1]}")
            i += 2
            continue
        out.append(items[i])
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``terralens`` command.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 for bad input, 1 when the catalog, data or model fails or anything
        unexpected happens (one line; ``--debug`` prints the traceback).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(_join_negative_values(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    configure_logging(int(getattr(args, "verbose", None) or 0))
    try:
        return int(args.func(args))
    except InvalidRequestError as err:  # includes InvalidAOIError
        _report(err, debug)
        return EXIT_USAGE
    except TerraLensError as err:
        _report(err, debug)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except RecursionError as err:
        _report(err, debug, "the input is nested too deeply to be read")
        return EXIT_FAILURE
    except Exception as err:  # the top-level guard: one line, never a traceback
        _report(err, debug, f"unexpected {type(err).__name__}: {err}")
        return EXIT_FAILURE


def _report(err: BaseException, debug: bool, message: str | None = None) -> None:
    """One error line; with ``--debug`` the traceback first."""
    if debug:
        traceback.print_exception(err, file=sys.stderr)
    text = message if message is not None else str(err)
    if message is not None and not debug:
        text += " (run again with --debug for the details)"
    _fail(text[:2000])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
