"""Escaping of external strings for the three languages TerraLens writes: HTML, JavaScript and
Streamlit markdown.

Every string that comes from outside the code — a STAC item id or property, an uploaded file
name, a URL, a ``?run=`` value, an error message quoting any of those — goes through one of
these helpers before it reaches HTML, a script or markdown:

* :func:`html_text` — text or a quoted attribute value in HTML (Leaflet's layer control sets
  layer names as ``innerHTML``, so they are HTML too).
* :func:`js_string` — a complete JavaScript string literal, safe inside ``<script>``.
* :func:`js_template` — the inside of a JavaScript template literal (`` `...` ``): no
  ``${...}`` substitution, no closing backtick, no ``</script>``.
* :func:`folium_html` — text for a folium ``Tooltip``/``Popup``: folium writes it raw into a
  template literal of HTML, so it is escaped for HTML, then for the template literal.
* :func:`markdown_text` — plain text inside Streamlit markdown (``st.markdown``, ``st.error``,
  captions, widget labels): no links, images, emphasis, math, HTML or colour directives.
* :func:`markdown_code` — an inline code span holding any text.

No Streamlit import: the core (``app.maps``, ``app.legends``) uses this module as well.
"""

from __future__ import annotations

import html
import json
import re

__all__ = ["folium_html", "html_text", "js_string", "js_template", "markdown_code",
           "markdown_text"]

#: Characters that would end a ``<script>`` element, open a comment or break out of an
#: attribute when a script sits in one; replaced by JavaScript escapes (same string value).
_JS_UNSAFE = {
    "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "'": "\\u0027",
    "\u2028": "\\u2028", "\u2029": "\\u2029",
}
#: Inside a template literal: the escape character, the delimiter, ``${`` and ``</script>``.
_TEMPLATE_UNSAFE = {
    "\\": "\\\\", "`": "\\`", "$": "\\$", "<": "\\x3c", ">": "\\x3e",
    "\u2028": "\\u2028", "\u2029": "\\u2029",
}
#: Markdown punctuation escaped everywhere (CommonMark lets a backslash escape any ASCII
#: punctuation; these start emphasis, code, links, images, HTML, tables, headings, math
#: (``$``, Streamlit's LaTeX), strikethrough (``~``) and entities (``&``)).
_MD_ALWAYS = frozenset("\\`*[]<>#|~$&")
#: Words GFM turns into links without any markup (``www.x``, ``scheme://x``, ``a@b.c``).
#: Streamlit finds them in the parsed text, after backslash escapes are gone, so such a word
#: is put in a code span instead (where nothing is a link).
_MD_AUTOLINK = re.compile(r"(?i)www\.|://|@")
#: ``:name`` is a directive for Streamlit (``:red[...]``, ``:material/icon:``).
_MD_DIRECTIVE = re.compile(r":(?=[A-Za-z])")
#: Line starts that make a block: list items, headings by underline, quotes (``>`` is
#: escaped anyway), ordered list items (``1.`` / ``1)``).
_MD_LINE_START = re.compile(r"(?m)^([ \t]*)(?:([-+=])|(\d+)([.)]))")


def html_text(value: object) -> str:
    """``value`` as HTML text, also safe as a quoted attribute value (``"`` and ``'`` too).

    Example:
        >>> html_text('<img src=x onerror="alert(1)">')
        '&lt;img src=x onerror=&quot;alert(1)&quot;&gt;'
    """
    return html.escape(str(value), quote=True)


def js_string(value: object) -> str:
    """``value`` as a JavaScript string literal (with its quotes), safe inside ``<script>``.

    Example:
        >>> js_string("</script><b>")
        '"\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e"'
    """
    text = json.dumps(str(value), ensure_ascii=False)
    return "".join(_JS_UNSAFE.get(c, c) for c in text)


def js_template(value: object) -> str:
    """``value`` escaped for the inside of a JavaScript template literal (`` `...` ``).

    The literal then holds exactly ``value``: ``${...}`` is not evaluated, a backtick does not
    end it and ``</script>`` does not end the script element.

    Example:
        >>> js_template("${alert(1)}`")
        '\\\\${alert(1)}\\\\`'
    """
    return "".join(_TEMPLATE_UNSAFE.get(c, c) for c in str(value))


def folium_html(value: object) -> str:
    """Text for a folium ``Tooltip``/``Popup`` (written raw into a template literal of HTML):
    the tooltip shows ``value`` literally and runs nothing."""
    return js_template(html_text(value))


def _escape_underscore(text: str) -> str:
    # "_" between two letters/digits never opens or closes emphasis (so scene_id, file names
    # and environment variables stay readable in the markdown source); elsewhere it may.
    return re.sub(r"(?<![^\W_])_|_(?![^\W_])", r"\\_", text)


def _escape_line_start(m: re.Match[str]) -> str:
    indent, marker, number, delimiter = m.groups()
    return f"{indent}\\{marker}" if marker else f"{indent}{number}\\{delimiter}"


def markdown_text(value: object) -> str:
    """``value`` as plain text inside Streamlit markdown: shown literally, never a link, image,
    emphasis, heading, list, LaTeX, HTML or ``:color[...]`` directive.

    A word that GFM would turn into a link by itself (``https://...``, ``www....``, an e-mail
    address) becomes an inline code span, shown literally in a monospace font.

    Example:
        >>> print(markdown_text("see [here](https://x.org) **now** :red[x]"))
        see `[here](https://x.org)` \\*\\*now\\*\\* \\:red\\[x\\]
    """
    parts = re.split(r"(\s+)", str(value))
    for i in range(0, len(parts), 2):  # the words; odd indices hold the white space
        word = parts[i]
        if _MD_AUTOLINK.search(word):
            parts[i] = markdown_code(word)
            continue
        word = "".join(f"\\{c}" if c in _MD_ALWAYS else c for c in word)
        parts[i] = _MD_DIRECTIVE.sub(r"\\:", _escape_underscore(word))
    return _MD_LINE_START.sub(_escape_line_start, "".join(parts))


def markdown_code(value: object) -> str:
    """``value`` as an inline code span (``st.markdown``): shown literally in a monospace font.

    The fence is one backtick longer than the longest run of backticks in ``value``; newlines
    become spaces (a code span is one line).

    Example:
        >>> markdown_code("a`b")
        '`` a`b ``'
    """
    text = " ".join(str(value).splitlines()) or " "
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    if longest or text.startswith((" ", "`")) or text.endswith((" ", "`")):
        return f"{fence} {text} {fence}"
    return f"{fence}{text}{fence}"
