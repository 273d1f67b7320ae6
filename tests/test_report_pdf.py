"""The one-page PDF report of a run, and ``terralens report``.

No PDF library is installed, so the PDF is read with a small reader of its own structure:
pages are the ``/Type /Page`` objects; the text is what the page's (Flate-compressed) content
stream shows with ``Tj``/``TJ`` inside ``BT … ET`` (matplotlib writes ASCII and Latin-1 text as
literal strings of its Type 3 fonts; kerning numbers between the pieces are dropped). Without
the fonts' ToUnicode maps, ligatures ("ff", "fi") read as one odd byte: the checked values
avoid them.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from pathlib import Path
from typing import Any

import pytest

from app.cli import main
from app.layers import display_layers_for
from app.map_export import terralens_version
from app.report_pdf import default_map_layer, report_pdf
from app.runs import RunStore
from tests.fixtures.runs import MODEL, SCENE_ID, WEIGHTS, make_sample_layers

SHA_MODEL = "3f" * 32
SHA_TOKENIZER = "a1" * 32
HOSTILE = "$\\frac{1}{2}$ <script>alert(1)</script> (x) \\ ✓"

_STRING = re.compile(rb"\((?:[^()\\]|\\.)*\)", re.S)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}


def _unescape(literal: bytes) -> bytes:
    out, i, body = bytearray(), 0, literal[1:-1]
    while i < len(body):
        char = body[i:i + 1]
        if char != b"\\":
            out += char
            i += 1
            continue
        nxt = body[i + 1:i + 2]
        octal = re.match(rb"[0-7]{1,3}", body[i + 1:i + 4])
        if octal:
            out.append(int(octal.group(), 8))
            i += 1 + len(octal.group())
        else:
            out += _ESCAPES.get(nxt, nxt)
            i += 2
    return bytes(out)


def pdf_pages(data: bytes) -> int:
    """The number of page objects (``/Type /Page``, not ``/Pages``)."""
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))


def pdf_text(data: bytes) -> str:
    """Every text object of the PDF's content streams, one per line."""
    lines = []
    for match in re.finditer(rb"stream\r?\n", data):
        end = data.find(b"endstream", match.end())
        try:
            content = zlib.decompress(data[match.end():end])
        except zlib.error:
            continue
        for block in re.findall(rb"BT(.*?)ET", content, re.S):
            pieces = [_unescape(s) for s in _STRING.findall(block)]
            lines.append(b"".join(pieces).decode("latin-1"))
    return "\n".join(lines)


def _store_run(root: Path, *, untrained: bool = False) -> Any:
    sample = make_sample_layers(0, untrained=untrained)
    provenance = dict(sample.provenance)
    if not untrained:
        provenance["weights_files"] = [
            {"key": "model", "file": "TerraMind_v1_tiny.pt", "sha256": SHA_MODEL},
            {"key": "DEM", "file": "TerraMind_Tokenizer_DEM.pt", "sha256": SHA_TOKENIZER},
        ]
    return RunStore(root).save(sample.request, sample.layers, provenance=provenance,
                               input_layer=sample.input_layer)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The sample run with recorded weight files, written as COGs."""
    return _store_run(tmp_path_factory.mktemp("report-runs"))


def test_the_report_is_one_page_with_map_statistics_and_provenance(run: Any) -> None:
    layers = run.load_layers()
    data = report_pdf(run, layers)
    assert data.startswith(b"%PDF-")
    assert pdf_pages(data) == 1
    text = pdf_text(data)
    for value in (SCENE_ID, MODEL, WEIGHTS, SHA_MODEL, SHA_TOKENIZER, run.id,
                  "seed 0", "timesteps 10", f"TerraLens {terralens_version()}",
                  "terratorch 1.2.11"):
        assert value in text, value
    # Statistics in physical units and the class areas of the generated land cover.
    assert "Statistics (valid pixels, physical units)" in text
    assert "[G] DEM" in text and "[G] S1GRD-VV" in text and "dB" in text
    assert "Class areas" in text and "Rangeland" in text and "Water" in text
    assert "Map: [G] LULC" in text  # the default map: the generated class map
    assert "SYNTHETIC" in text  # the run's mark
    assert b"TerraLens run report" in data  # metadata title


def test_the_report_of_an_untrained_run_says_so(tmp_path: Path) -> None:
    untrained = _store_run(tmp_path, untrained=True)
    text = pdf_text(report_pdf(untrained, untrained.load_layers()))
    assert "UNTRAINED weights" in text
    assert "none: untrained (seeded random) weights" in text


def test_a_hostile_layer_name_renders_as_plain_text(run: Any) -> None:
    layers = run.load_layers()
    ndvi = next(d for d in display_layers_for(layers) if d.name == "[G] NDVI")
    hostile = dataclasses.replace(ndvi, name=HOSTILE, title=HOSTILE)
    data = report_pdf(run, layers, map_layer=hostile)
    assert pdf_pages(data) == 1
    # Drawn as the characters it holds (mathtext would have drawn a fraction, not "\frac").
    assert "$\\frac{1}{2}$ <script>alert(1)</script> (x) \\" in pdf_text(data)


def test_the_default_map_is_the_generated_class_map(run: Any) -> None:
    shown = display_layers_for(run.load_layers())
    assert default_map_layer(shown).name == "[G] LULC"


def test_cli_report_writes_the_pdf_and_the_map(run: Any, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "report.pdf", tmp_path / "map.png"
    code = main(["report", str(run.path), "--out", str(out), "--layer", "[G] DEM",
                 "--png", str(png), "--width", "1200"])
    assert code == 0, capsys.readouterr().err
    data = out.read_bytes()
    assert pdf_pages(data) == 1 and "Map: [G] DEM" in pdf_text(data)
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (1200, 750)
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--layer", "nope"], 2, "has no layer 'nope'"),
    (["--width", "10"], 2, "width must be 600..4800"),
])
def test_cli_report_errors_are_one_line(run: Any, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        args: list[str], code: int, message: str) -> None:
    assert main(["report", str(run.path), "--out", str(tmp_path / "r.pdf"), *args]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_report_of_a_missing_run_or_unwritable_file(run: Any, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    assert main(["report", str(tmp_path / "no-such-run"), "--out", str(tmp_path / "r.pdf")]) == 1
    assert "no run folder" in capsys.readouterr().err
    bad = tmp_path / "missing-dir" / "r.pdf"
    assert main(["report", str(run.path), "--out", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "cannot write" in err and "Traceback" not in err
