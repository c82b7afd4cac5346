"""The web client's copy of protocol v1's codes, generated from :mod:`actors.vocabulary`.

``python -m transport.vocabulary_js > webclient/js/vocabulary.js`` writes it: an ES module of
frozen objects (no build step in the client). ``tests/test_vocabulary_js.py`` fails while the
committed file differs from :func:`render`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from enum import Enum

from actors.vocabulary import (
    SYSTEM_EVENT_KINDS,
    CloseCode,
    ErrorCode,
    Feature,
    KickReason,
    RejectCode,
)

HEADER = (
    "// Protocol v1's codes for the web client: generated from actors/vocabulary.py by\n"
    "// `python -m transport.vocabulary_js > webclient/js/vocabulary.js`; do not edit.\n"
)


def _members(name: str, doc: str, pairs: Iterable[tuple[str, object]]) -> str:
    body = "".join(f"  {key}: {json.dumps(value)},\n" for key, value in pairs)
    return f"// {doc}\nexport const {name} = Object.freeze({{\n{body}}});\n"


def _enum(enum: type[Enum], doc: str) -> str:
    return _members(enum.__name__, doc, ((m.name, m.value) for m in enum))


def render() -> str:
    """The text of ``webclient/js/vocabulary.js``."""
    parts = [
        HEADER,
        _enum(CloseCode, "WebSocket close codes."),
        _enum(ErrorCode, "`error.code` values."),
        _enum(KickReason, "`kicked.reason` values."),
        _enum(RejectCode, "`reject.code` values."),
        _enum(Feature, "`features` a client may ask for in hello/resume."),
        _members(
            "SystemEventKind",
            "`payload.kind` of a `system` event, by name.",
            ((k.upper(), k) for k in SYSTEM_EVENT_KINDS),
        ),
        "export const SYSTEM_EVENT_KINDS = Object.freeze(Object.values(SystemEventKind));\n",
    ]
    return "\n".join(parts)


def main() -> None:
    """Print the module (``python -m transport.vocabulary_js > webclient/js/vocabulary.js``)."""
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
