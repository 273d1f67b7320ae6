"""The escaping helpers: hostile strings come out as literal text in HTML, JavaScript and markdown.

HTML is checked with Python's HTML parser, markdown with markdown-it-py (CommonMark), JavaScript
by evaluating it in Debian's Chromium; what Streamlit's own markdown renderer and the Leaflet
map do with them is in ``tests/test_browser.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from app.escaping import (
    folium_html,
    html_text,
    js_string,
    js_template,
    markdown_code,
    markdown_text,
)
from app.layers import display_layers_for, render_png
from app.maps import build_map

#: Strings an attacker (or an unlucky file name) can put in an item id, a file name or a URL.
HOSTILE = [
    "<img src=x onerror=\"top.__pwned='img'\">",
    "${top.__pwned='template'}",
    "`;top.__pwned='backtick';`",
    "</script><script>top.__pwned='script'</script>",
    "'\"); top.__pwned='quote'; (\"",
    "a\\`${1+1}\\${2}",
    "line\u2028break\u2029para",
    "[click](https://example.org/x) ![pic](https://example.org/p.png)",
    "**bold** _it_ ~~gone~~ `code` $x^2$ :red[red] <b>raw</b> &amp;",
    "# heading\n- item\n1. first\n> quote\n| a | b |\n=== ",
    "www.example.org https://example.org/a_b mail@example.org",
    "S2A_MSIL2A_20240615_T33TWL",  # an ordinary id stays as it is
]


class _Collect(HTMLParser):
    """Tags and text of an HTML fragment."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(fragment: str) -> _Collect:
    parser = _Collect()
    parser.feed(fragment)
    parser.close()
    return parser


@pytest.mark.parametrize("value", HOSTILE)
def test_html_text_is_text_and_a_safe_attribute(value: str) -> None:
    parsed = _parse(f"<p>{html_text(value)}</p>")
    assert parsed.tags == ["p"] and "".join(parsed.text) == value
    attr = _parse(f'<span title="{html_text(value)}">x</span>')
    assert attr.tags == ["span"] and "".join(attr.text) == "x"


@pytest.mark.parametrize("value", HOSTILE)
def test_markdown_text_renders_as_the_literal_text(value: str) -> None:
    rendered = MarkdownIt("commonmark").enable("table").enable("strikethrough").render(
        markdown_text(value))
    parsed = _parse(rendered)
    # No link, image, emphasis, list or HTML; link-like words are code spans.
    assert set(parsed.tags) <= {"p", "br", "code"}, rendered
    assert " ".join("".join(parsed.text).split()) == " ".join(value.split()), rendered


def test_markdown_text_keeps_ordinary_names_readable() -> None:
    # Underscores inside words cannot make emphasis, so ids and variables stay as typed.
    assert markdown_text("S2A_MSIL2A_T33TWL TERRALENS_STAC_URL my_dem.tif") == (
        "S2A_MSIL2A_T33TWL TERRALENS_STAC_URL my_dem.tif")
    assert markdown_text("_x_") == "\\_x\\_"


@pytest.mark.parametrize("value", [*HOSTILE, "``a`b``", "`", " lead and trail "])
def test_markdown_code_is_one_code_span_of_the_value(value: str) -> None:
    rendered = MarkdownIt("commonmark").render(markdown_code(value))
    parsed = _parse(rendered)
    assert parsed.tags == ["p", "code"], rendered
    shown = "".join(parsed.text).strip()
    assert shown == " ".join(value.splitlines()).strip(), rendered


def test_map_html_carries_hostile_ids_and_names_only_escaped(sample_run: tuple[Any, Any]) -> None:
    _, run = sample_run
    da = run.load_layer("NDVI")
    [ndvi] = display_layers_for({"NDVI": da})
    hostile = "<img src=x onerror=alert(1)>${alert(2)}`"
    overlay = (replace(ndvi, name=f"{ndvi.name} · {hostile}"), render_png(da, ndvi), 1.0)
    square = {"type": "Polygon",
              "coordinates": [[[15, 45], [15.1, 45], [15.1, 45.1], [15, 45.1], [15, 45]]]}
    m = build_map(footprints=[(hostile, square, True)], overlays=[overlay], basemap=None)
    page = m.get_root().render()
    assert "<img src=x" not in page
    [tooltip] = re.findall(r"bindTooltip\(\s*`(.*?)(?<!\\)`", page, flags=re.S)
    assert re.search(r"(?<!\\)\$\{", tooltip) is None, tooltip  # no live substitution
    # The tooltip's template literal holds the HTML-escaped text; the layer control the
    # HTML-escaped names (Leaflet sets them as innerHTML).
    assert "&lt;img src=x onerror=alert(1)&gt;\\${alert(2)}\\`" in page
    assert "\\u0026lt;img src=x onerror=alert(1)\\u0026gt;${alert(2)}`" in page


# -- JavaScript, evaluated by a real engine -------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def js_page() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--headless=new", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.dialogs = dialogs
        yield page
        browser.close()


def _run_script(page: Any, script: str) -> None:
    page.set_content(f"<!doctype html><html><body><div id=out></div><script>{script}</script>"
                     "</body></html>")


@pytest.mark.browser
@pytest.mark.parametrize("value", HOSTILE)
def test_js_helpers_give_back_the_value_and_run_nothing(js_page: Any, value: str) -> None:
    _run_script(js_page, f"window.s = {js_string(value)}; window.t = `{js_template(value)}`;"
                         f"document.getElementById('out').innerHTML = `<div>{folium_html(value)}"
                         "</div>`;")
    assert js_page.evaluate("window.s") == value
    assert js_page.evaluate("window.t") == value
    assert js_page.evaluate("document.getElementById('out').textContent") == value
    assert js_page.evaluate("document.querySelectorAll('#out img, #out script').length") == 0
    assert js_page.evaluate("window.__pwned") is None
    assert js_page.dialogs == []
