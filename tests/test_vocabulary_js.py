"""The web client's copy of protocol v1's codes: generated, current, and the only place they are written."""

from __future__ import annotations

import re
from pathlib import Path

from actors.vocabulary import CloseCode
from transport import vocabulary_js

JS_DIR = Path(__file__).resolve().parent.parent / "webclient" / "js"
VOCABULARY_JS = JS_DIR / "vocabulary.js"

# Any close code but 1000 as a bare number; 1000 only where it is a close code (it is also the
# milliseconds in a second).
_BARE = "|".join(str(int(c)) for c in CloseCode if c != CloseCode.NORMAL)
CLOSE_LITERAL = re.compile(
    rf"(?<![\w.])(?:{_BARE})(?![\w.])"
    rf"|(?:case\s+|close\(\s*|_dropSocket\(\s*|_onClose\(\s*|code\s*[!=]==?\s*){int(CloseCode.NORMAL)}\b"
)


def test_committed_vocabulary_js_is_current() -> None:
    assert VOCABULARY_JS.read_text(encoding="utf-8") == vocabulary_js.render(), (
        "webclient/js/vocabulary.js is stale: regenerate it with "
        "`python -m transport.vocabulary_js > webclient/js/vocabulary.js`"
    )


def test_vocabulary_js_says_it_is_generated() -> None:
    head = VOCABULARY_JS.read_text(encoding="utf-8").splitlines()[:2]
    assert "generated from actors/vocabulary.py" in head[0]
    assert "python -m transport.vocabulary_js" in head[1] and "do not edit" in head[1]


def test_no_other_js_module_writes_a_close_code() -> None:
    found = [
        f"{path.relative_to(JS_DIR)}:{n}: {line.strip()}"
        for path in sorted(JS_DIR.rglob("*.js"))
        if path != VOCABULARY_JS
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if CLOSE_LITERAL.search(line)
    ]
    assert not found, "close codes belong to webclient/js/vocabulary.js (CloseCode):\n" + "\n".join(found)


def test_the_scan_sees_a_close_code_literal() -> None:
    for line in ("case 4009:", "ws.close(1000, 'bye')", "if (code === 1011) retry();", "drop(4000)"):
        assert CLOSE_LITERAL.search(line), line
    for line in ("const s = ms / 1000;", "setTimeout(f, 1000)", "x = 2 ** 31 - 1", "id4009x", "1.4009"):
        assert not CLOSE_LITERAL.search(line), line
