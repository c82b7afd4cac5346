"""Protocol v1 as a whole: the JSON Schema of both directions of the WebSocket protocol.

The frames themselves live in :mod:`transport.client_frames` (strict parsing),
:mod:`transport.server_frames` (models) and :mod:`transport.codec` (hot-path builders); the
codes they carry in :mod:`actors.vocabulary`. ``python -m transport.frames`` prints the schema
(regenerate ``docs/protocol.schema.json`` with it). The prose contract is ``docs/protocol.md``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from transport.client_frames import CLIENT_ADAPTER
from transport.server_frames import SERVER_ADAPTER


def protocol_json_schema() -> dict[str, Any]:
    """JSON Schema of protocol v1: ``{"client": ..., "server": ...}`` (one oneOf each)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tilehall WebSocket protocol v1",
        "description": (
            "Generated from transport/frames.py by `python -m transport.frames`. "
            "Validation is stricter than JSON Schema says: 1.0 is not an integer, true is not "
            "a number. See docs/protocol.md."
        ),
        # Each direction keeps its own $defs; refs point into it from the document root.
        "client": CLIENT_ADAPTER.json_schema(
            mode="validation", ref_template="#/client/$defs/{model}"
        ),
        "server": SERVER_ADAPTER.json_schema(
            mode="serialization", ref_template="#/server/$defs/{model}"
        ),
    }


def main() -> None:
    """Print the protocol JSON Schema (``python -m transport.frames > docs/protocol.schema.json``)."""
    sys.stdout.write(json.dumps(protocol_json_schema(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
