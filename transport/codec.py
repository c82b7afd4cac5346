"""The hot-path frame codec: server frames' JSON built from plain dicts, no pydantic.

Each builder produces the same JSON as the matching model's ``.to_json()`` (see
:mod:`transport.server_frames`), only cheaper. :data:`CODEC` bundles them for the actors
(``actors.ports.FrameCodec``).
"""

from __future__ import annotations

import json
from collections import deque
from datetime import UTC, datetime
from typing import Any

import orjson

from transport.server_frames import server_frame_json

_json_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _dumps(obj: dict[str, Any]) -> str:
    """Compact UTF-8 JSON text, as ``_json_dumps`` writes it but ~10x cheaper (orjson); for the
    frames built per action, whose values are str, int, bool, None, lists and dicts."""
    return orjson.dumps(obj).decode()


def iso_utc(dt: datetime) -> str:
    """``2024-05-01T12:00:00.123456Z``: the protocol's timestamp form (aware datetimes only)."""
    if dt.tzinfo is None:
        raise ValueError("iso_utc needs an aware datetime")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# A group commit stamps every row of a batch with one persisted_at, and each row becomes an ack
# and several events: format that timestamp once, not once per frame.
_last_ts: tuple[datetime | None, str] = (None, "")


def _ts(value: str | datetime) -> str:
    global _last_ts
    if isinstance(value, str):
        return value
    last, text = _last_ts
    if value is not last:
        text = iso_utc(value)
        _last_ts = (value, text)
    return text


def ack_json(seq: int, action_id: str, persisted_at: str | datetime, state: dict[str, Any]) -> str:
    """The ``ack`` frame's JSON, equal to ``Ack(...).to_json()`` but cheaper."""
    return _dumps(
        {
            "type": "ack",
            "seq": seq,
            "action_id": action_id,
            "persisted_at": _ts(persisted_at),
            "state": state,
        }
    )


def reject_json(seq: int, code: str, message: str) -> str:
    """The ``reject`` frame's JSON."""
    return _dumps({"type": "reject", "seq": seq, "code": code, "message": message})


def event_body_json(
    action_id: str,
    character_id: str,
    display_name: str,
    action_type: str,
    payload: dict[str, Any],
    persisted_at: str | datetime,
) -> str:
    """An ``event`` without ``type``/``event_seq``: built once, stamped per observer."""
    return _dumps(
        {
            "action_id": action_id,
            "character_id": character_id,
            "display_name": display_name,
            "action_type": action_type,
            "payload": payload,
            "persisted_at": _ts(persisted_at),
        }
    )


def stamp_event(body: str, event_seq: int) -> str:
    """The full ``event`` frame: ``body`` from :func:`event_body_json` plus this session's seq."""
    return f'{{"type":"event","event_seq":{int(event_seq)},{body[1:]}'


def event_json(
    event_seq: int,
    action_id: str,
    character_id: str,
    display_name: str,
    action_type: str,
    payload: dict[str, Any],
    persisted_at: str | datetime,
) -> str:
    """The ``event`` frame's JSON, equal to ``Event(...).to_json()`` but cheaper."""
    body = event_body_json(action_id, character_id, display_name, action_type, payload, persisted_at)
    return stamp_event(body, event_seq)


_EVENT_PREFIX = '{"type":"event",'
# The most events in one ``events`` frame: a slow reader's backlog is cut into frames of this many.
EVENTS_PER_FRAME = 128


def events_json(frames: list[str]) -> str:
    """One ``events`` frame holding the ``event`` frames ``frames`` (their JSON text), in order."""
    return '{"type":"events","events":[' + ",".join(frames) + "]}"


def coalesce_events(out: deque[str]) -> deque[str]:
    """Take every frame from ``out``; each run of consecutive ``event`` frames becomes one
    ``events`` frame (a run of one stays an ``event``); every other frame keeps its place."""
    merged: deque[str] = deque()
    run: list[str] = []
    while out:
        frame = out.popleft()
        if frame.startswith(_EVENT_PREFIX):
            run.append(frame)
            if len(run) < EVENTS_PER_FRAME:
                continue
        if run:
            merged.append(run[0] if len(run) == 1 else events_json(run))
            run = []
        if not frame.startswith(_EVENT_PREFIX):
            merged.append(frame)
    if run:
        merged.append(run[0] if len(run) == 1 else events_json(run))
    return merged


def ack_with_event(ack: str, event: str) -> str:
    """The ``ack`` frame ``ack`` carrying the action's own ``event`` frame (feature ``ack_event``)."""
    return f'{ack[:-1]},"event":{event}}}'


def pong_json(t: float, server_time: int) -> str:
    """The ``pong`` frame's JSON."""
    return _json_dumps({"type": "pong", "t": t, "server_time": server_time})  # a float: json's form

class _Codec:
    """The frame builders as one object: what the actors are handed (see actors.ports)."""

    ack_json = staticmethod(ack_json)
    reject_json = staticmethod(reject_json)
    event_body_json = staticmethod(event_body_json)
    stamp_event = staticmethod(stamp_event)
    ack_with_event = staticmethod(ack_with_event)
    iso_utc = staticmethod(iso_utc)
    server_frame_json = staticmethod(server_frame_json)


CODEC = _Codec()

