"""Protocol v1 frames: strict client parsing, server serialisation, builders, committed schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import vocabulary as v
from transport import client_frames as cf
from transport import codec
from transport import frames as f
from transport import server_frames as sf

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "protocol.schema.json"
UUID_A = "0b7e3c2a-1d4f-4a5b-9c6d-7e8f90a1b2c3"
UUID_B = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
TS = "2024-05-01T12:00:00.123456Z"
RTOKEN = "r" * 43


def dumps(obj: object) -> str:
    """Compact JSON for test frames."""
    return json.dumps(obj, separators=(",", ":"))


def move(**over: object) -> dict:
    """A valid move action, with overrides."""
    frame: dict = {"type": "action", "seq": 1, "action_type": "move", "payload": {"dx": 1, "dy": -1}}
    frame.update(over)
    return frame


# ------------------------------------------------------------------ schema file


def test_committed_schema_is_current() -> None:
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert committed == f.protocol_json_schema(), (
        "docs/protocol.schema.json is stale: regenerate it with "
        "`python -m transport.frames > docs/protocol.schema.json`"
    )


def test_schema_has_both_directions_and_every_frame_type() -> None:
    schema = f.protocol_json_schema()
    client_tags = set(schema["client"]["discriminator"]["mapping"])
    server_tags = set(schema["server"]["discriminator"]["mapping"])
    assert client_tags == set(v.CLIENT_FRAME_TYPES)
    assert server_tags == {
        "welcome", "resumed", "ack", "reject", "event", "events", "resync_required", "pong", "kicked",
        "error",
    }


def test_schema_refs_resolve_from_the_document_root() -> None:
    schema = f.protocol_json_schema()
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    refs.append(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    assert refs
    for ref in refs:
        target: object = schema
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, f"dangling $ref {ref}"
            target = target[part]


def test_main_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    f.main()
    assert json.loads(capsys.readouterr().out) == f.protocol_json_schema()


# ------------------------------------------------------------------ valid client frames


@pytest.mark.parametrize(
    ("frame", "cls"),
    [
        ({"type": "hello", "protocol_version": "1.0.0", "token": "t"}, cf.HelloFrame),
        (
            {"type": "hello", "protocol_version": "1.0.0", "token": "t", "character_id": UUID_A},
            cf.HelloFrame,
        ),
        ({"type": "hello", "protocol_version": "1.0.0", "token": "t", "character_id": None}, cf.HelloFrame),
        (
            {
                "type": "resume", "protocol_version": "1.0.0", "token": "t",
                "reconnect_token": RTOKEN, "last_event_seq": 0,
            },
            cf.ResumeFrame,
        ),
        (move(), cf.MoveAction),
        (move(payload={"dx": 0, "dy": 0}), cf.MoveAction),
        ({"type": "action", "seq": 2, "action_type": "chat", "payload": {"text": "hi ☃"}}, cf.ChatAction),
        ({"type": "action", "seq": 3, "action_type": "ability", "payload": {"name": "heal"}}, cf.AbilityAction),
        (
            {
                "type": "action", "seq": 4, "action_type": "ability",
                "payload": {"name": "strike", "target_id": UUID_B, "item_id": None},
            },
            cf.AbilityAction,
        ),
        ({"type": "ping", "t": 12345}, cf.PingFrame),
        ({"type": "ping", "t": 12345.5}, cf.PingFrame),
        ({"type": "reauth", "token": "x" * 8192}, cf.ReauthFrame),
        ({"type": "logout"}, cf.LogoutFrame),
    ],
)
def test_valid_frames_parse(frame: dict, cls: type) -> None:
    parsed = cf.parse_client_frame(dumps(frame))
    assert type(parsed) is cls
    assert parsed.model_dump() == cf.parse_client_frame(parsed.model_dump_json()).model_dump()
    assert json.loads(parsed.model_dump_json(exclude_none=True, exclude_defaults=True)) == json.loads(
        dumps(frame).replace(',"character_id":null', "").replace(',"item_id":null', "")
    )


def test_bytes_input_parses() -> None:
    parsed = cf.parse_client_frame(dumps(move(seq=9)).encode())
    assert isinstance(parsed, cf.MoveAction) and parsed.seq == 9 and parsed.payload.dx == 1


def test_character_id_is_normalised_to_lower_case() -> None:
    raw = dumps({"type": "hello", "protocol_version": "1", "token": "t", "character_id": UUID_A.upper()})
    assert cf.parse_client_frame(raw).character_id == UUID_A


# ------------------------------------------------------------------ invalid client frames


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (move(seq="7"), "seq", "valid integer"),
        (move(seq=1.0), "seq", "valid integer"),
        (move(seq=True), "seq", "valid integer"),
        (move(seq=0), "seq", "greater than or equal to 1"),
        (move(seq=2**63), "seq", "less than or equal"),
        (move(payload={"dx": 1.0, "dy": 0}), "payload.dx", "valid integer"),
        (move(payload={"dx": "1", "dy": 0}), "payload.dx", "valid integer"),
        (move(payload={"dx": True, "dy": 0}), "payload.dx", "valid integer"),
        (move(payload={"dx": 2, "dy": 0}), "payload.dx", "less than or equal to 1"),
        (move(payload={"dx": 0, "dy": -2}), "payload.dy", "greater than or equal to -1"),
        (move(payload={"dx": 0}), "payload.dy", "Field required"),
        (move(payload={"dx": 0, "dy": 0, "dz": 1}), "payload.dz", "Extra inputs"),
        (move(payload=[1, 0]), "payload", "should be an object"),
        (move(extra=1), "extra", "Extra inputs"),
        (move(action_type="system", payload={"kind": "login"}), "action_type", "unknown action_type"),
        (move(action_type="teleport"), "action_type", "unknown action_type"),
        ({"type": "action", "seq": 1, "payload": {}}, "action_type", "Field required"),
        (
            {"type": "action", "seq": 1, "action_type": "chat", "payload": {"text": "a" * 281}},
            "payload.text", "at most 280",
        ),
        ({"type": "action", "seq": 1, "action_type": "chat", "payload": {"text": ""}}, "payload.text", "at least 1"),
        ({"type": "action", "seq": 1, "action_type": "chat", "payload": {"text": 5}}, "payload.text", "valid string"),
        (
            {"type": "action", "seq": 1, "action_type": "ability", "payload": {"name": "n" * 33}},
            "payload.name", "at most 32",
        ),
        ({"type": "teleport"}, "type", "unknown type"),
        ({"type": 1}, "type", "unknown type"),
        ({"seq": 1}, "type", "Field required"),
        ({"type": "ping", "t": "1"}, "t", "valid number"),
        ({"type": "ping", "t": True}, "t", "valid number"),
        ({"type": "ping"}, "t", "Field required"),
        ({"type": "logout", "now": True}, "now", "Extra inputs"),
        ({"type": "hello", "protocol_version": 1, "token": "t"}, "protocol_version", "valid string"),
        ({"type": "hello", "protocol_version": "1", "token": ""}, "token", "at least 1"),
        ({"type": "hello", "protocol_version": "1", "token": "x" * 8193}, "token", "at most 8192"),
        ({"type": "hello", "protocol_version": "1", "token": "t", "character_id": "bob"}, "character_id", "UUID"),
        (
            {"type": "resume", "protocol_version": "1", "token": "t", "reconnect_token": "short", "last_event_seq": 0},
            "reconnect_token", "at least 16",
        ),
        (
            {"type": "resume", "protocol_version": "1", "token": "t", "reconnect_token": RTOKEN, "last_event_seq": -1},
            "last_event_seq", "greater than or equal to 0",
        ),
        ({"type": "reauth"}, "token", "Field required"),
    ],
)
def test_invalid_frames_name_the_field(raw: dict, field: str, words: str) -> None:
    with pytest.raises(cf.FrameError) as info:
        cf.parse_client_frame(dumps(raw))
    err = info.value
    assert err.code == "bad_frame"
    assert err.field == field
    assert err.message.startswith(f"{field}: ")
    assert words in err.message


@pytest.mark.parametrize(
    "raw",
    ["", "not json", "{", "{'type': 'ping'}", '{"type":"ping","t":NaN}', b"\xff\xfe", "[" * 10_000, '{"a":' * 5000],
)
def test_non_json_is_a_frame_error(raw: str | bytes) -> None:
    with pytest.raises(cf.FrameError) as info:
        cf.parse_client_frame(raw)
    assert info.value.field is None or info.value.field == "t"
    assert len(info.value.message) <= 240


@pytest.mark.parametrize("raw", ["[]", '[{"type":"logout"}]', "1", "null", '"logout"', "true"])
def test_non_object_is_a_frame_error(raw: str) -> None:
    with pytest.raises(cf.FrameError) as info:
        cf.parse_client_frame(raw)
    assert info.value.field is None
    assert "JSON object" in info.value.message


def test_deeply_nested_junk_inside_an_object() -> None:
    junk: object = 1
    for _ in range(60):  # 120 levels: inside the JSON parser's recursion limit
        junk = {"x": [junk]}
    with pytest.raises(cf.FrameError) as info:
        cf.parse_client_frame(dumps({"type": "action", "seq": 5, "action_type": "move", "payload": junk}))
    assert info.value.field is not None and info.value.field.startswith("payload")
    assert info.value.seq == 5


def test_huge_input_is_not_echoed() -> None:
    big = "k" * 3000
    for raw in (dumps({"type": big}), dumps({"type": "logout", big: 1}), dumps(move(action_type=big))):
        with pytest.raises(cf.FrameError) as info:
            cf.parse_client_frame(raw)
        assert len(info.value.message) <= 240
        assert len(info.value.field or "") <= 100


def test_several_problems_report_the_first_and_count_the_rest() -> None:
    with pytest.raises(cf.FrameError) as info:
        cf.parse_client_frame(dumps(move(payload={"dx": 5, "dy": 5}, extra=1)))
    assert info.value.message.endswith("(and 2 more)")


@pytest.mark.parametrize(
    ("raw", "seq"),
    [
        (move(seq=12, payload={"dx": 3, "dy": 0}), 12),
        (move(seq=12, action_type="system"), 12),
        (move(seq=12, junk=True), 12),
        (move(seq="12", payload={"dx": 3, "dy": 0}), None),
        (move(seq=True, payload={"dx": 3, "dy": 0}), None),
        (move(seq=0, payload={"dx": 3, "dy": 0}), None),
        (move(seq=12.0, payload={"dx": 3, "dy": 0}), None),
        ({"type": "hello", "seq": 12}, None),
    ],
)
def test_frame_error_carries_a_readable_action_seq(raw: dict, seq: int | None) -> None:
    with pytest.raises(cf.FrameError) as info:
        cf.parse_client_frame(dumps(raw))
    assert info.value.seq == seq
    reject = info.value.reject_frame()
    if seq is None:
        assert reject is None
    else:
        assert reject is not None and reject.seq == seq and reject.code == "bad_frame"


def test_frame_error_becomes_an_error_frame() -> None:
    with pytest.raises(cf.FrameError) as info:
        cf.parse_client_frame('{"type":"ping","t":"x"}')
    frame = json.loads(info.value.error_frame().to_json())
    assert frame == {"type": "error", "code": "bad_frame", "message": "t: Input should be a valid number"}


# ------------------------------------------------------------------ hypothesis

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
frameish = st.fixed_dictionaries(
    {"type": st.sampled_from(v.CLIENT_FRAME_TYPES + ("system", ""))},
    optional={
        "seq": json_values,
        "action_type": st.sampled_from(("move", "chat", "ability", "system")) | json_values,
        "payload": st.fixed_dictionaries(
            {}, optional={"dx": json_values, "dy": json_values, "text": json_values, "name": json_values}
        )
        | json_values,
        "protocol_version": json_values,
        "token": json_values,
        "t": json_values,
        "last_event_seq": json_values,
        "reconnect_token": json_values,
    },
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(json_values, frameish))
def test_random_json_only_ever_raises_frame_error(value: object) -> None:
    try:
        parsed = cf.parse_client_frame(json.dumps(value))
    except cf.FrameError as err:
        assert err.code == "bad_frame"
        assert len(err.message) <= 240
        assert err.seq is None or (type(err.seq) is int and err.seq >= 1)
    else:
        assert parsed.type in v.CLIENT_FRAME_TYPES


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64))
def test_random_bytes_only_ever_raise_frame_error(raw: str | bytes) -> None:
    try:
        cf.parse_client_frame(raw)
    except cf.FrameError:
        pass


# ------------------------------------------------------------------ server frames


def world() -> sf.WorldSnapshot:
    """A small world with one other character and one item."""
    return sf.WorldSnapshot(
        map_id="default",
        width=40,
        height=30,
        characters=[
            sf.CharacterView(character_id=UUID_B, display_name="Bo", x=3, y=4, health=80, max_health=100)
        ],
        items=[sf.ItemView(item_id="potion-1", kind="potion", x=5, y=5)],
    )


def server_frames() -> list[sf._ServerModel]:
    """One of every server frame."""
    profile = sf.CharacterProfileView(
        character_id=UUID_A, display_name="Al", x=1, y=2, health=100, max_health=100,
        inventory=[{"item_id": "potion-1", "kind": "potion"}], stats={"strength": 3},
    )
    return [
        sf.Welcome(
            session_id=UUID_B, server_version="1.0.0", character=profile, last_action_seq=0,
            reconnect_token=RTOKEN, reconnect_expires_at=TS, heartbeat_interval_ms=5000,
            world=world(), event_seq=0,
        ),
        sf.Resumed(
            session_id=UUID_B, reconnect_token=RTOKEN, reconnect_expires_at=TS, sync="delta",
            replayed=3, event_seq=17,
        ),
        sf.Resumed(
            session_id=UUID_B, reconnect_token=RTOKEN, reconnect_expires_at=TS, sync="snapshot",
            replayed=0, world=world(), event_seq=40,
        ),
        sf.Ack(seq=1, action_id=UUID_A, persisted_at=TS, state={"x": 2, "y": 1}),
        sf.Reject(seq=2, code="blocked", message="a wall is in the way"),
        sf.Event(
            event_seq=1, action_id=UUID_A, character_id=UUID_B, display_name="Bo", action_type="system",
            payload={"kind": "login"}, persisted_at=TS,
        ),
        sf.ResyncRequired(expected_seq=7),
        sf.Pong(t=12.5, server_time=1714564800123),
        sf.Kicked(reason=v.KickReason.SESSION_REPLACED),
        sf.Error(code=v.ErrorCode.VERSION_MISMATCH, message="server is 1.0.0; reload the page"),
    ]


@pytest.mark.parametrize("frame", server_frames(), ids=lambda fr: fr.type)
def test_server_frames_round_trip(frame: sf._ServerModel) -> None:
    text = frame.to_json()
    assert "\n" not in text and ", " not in text.replace('", "', "")
    assert json.loads(text)["type"] == frame.type
    back = sf.parse_server_frame(text)
    assert back == frame
    assert type(back).model_validate_json(text) == frame


def test_server_models_refuse_unknown_fields_and_bad_values() -> None:
    with pytest.raises(ValueError):
        sf.parse_server_frame('{"type":"ack","seq":1,"action_id":"x","persisted_at":"now","state":{}}')
    with pytest.raises(ValueError):
        sf.parse_server_frame('{"type":"kicked","reason":"r","extra":1}')
    with pytest.raises(ValueError):
        sf.Ack(seq=1, action_id=UUID_A, persisted_at="2024-05-01T12:00:00+02:00", state={})


# ------------------------------------------------------------------ hot-path builders


def test_ack_json_matches_the_model() -> None:
    state = {"x": 2, "y": 1, "note": "é"}
    text = codec.ack_json(5, UUID_A, TS, state)
    assert sf.Ack.model_validate_json(text) == sf.Ack(seq=5, action_id=UUID_A, persisted_at=TS, state=state)
    assert text == sf.Ack(seq=5, action_id=UUID_A, persisted_at=TS, state=state).to_json()


def test_event_json_matches_the_model() -> None:
    payload = {"x": 3, "y": 4, "dx": 1, "dy": 0}
    text = codec.event_json(9, UUID_A, UUID_B, "Bö", "move", payload, TS)
    model = sf.Event(
        event_seq=9, action_id=UUID_A, character_id=UUID_B, display_name="Bö", action_type="move",
        payload=payload, persisted_at=TS,
    )
    assert sf.parse_server_frame(text) == model
    assert text == model.to_json()


def test_stamp_event_gives_each_observer_its_own_seq() -> None:
    body = codec.event_body_json(UUID_A, UUID_B, "Bo", "chat", {"text": "hi"}, TS)
    seqs = [sf.parse_server_frame(codec.stamp_event(body, n)).event_seq for n in (1, 2, 300)]
    assert seqs == [1, 2, 300]


def test_reject_and_pong_builders_match_the_models() -> None:
    assert sf.parse_server_frame(codec.reject_json(3, "too_fast", "slow down")) == sf.Reject(
        seq=3, code="too_fast", message="slow down"
    )
    assert sf.parse_server_frame(codec.pong_json(12.5, 1714564800123)) == sf.Pong(t=12.5, server_time=1714564800123)


def test_builders_format_datetimes_as_utc_z() -> None:
    at = datetime(2024, 5, 1, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    ack = sf.Ack.model_validate_json(codec.ack_json(1, UUID_A, at, {}))
    assert ack.persisted_at == "2024-05-01T12:00:00.000005Z"
    assert codec.iso_utc(datetime(2024, 1, 2, tzinfo=UTC)) == "2024-01-02T00:00:00.000000Z"
    with pytest.raises(ValueError):
        codec.iso_utc(datetime(2024, 1, 2))


# ------------------------------------------------------------------ close codes


def test_close_codes_match_the_design() -> None:
    assert {c.name: c.value for c in v.CloseCode} == {
        "NORMAL": 1000, "GOING_AWAY": 1001, "POLICY": 1008, "TOO_LARGE": 1009, "INTERNAL": 1011,
        "SERVICE_RESTART": 1012, "TRY_AGAIN_LATER": 1013,
        "VERSION_MISMATCH": 4000, "BAD_TOKEN": 4001, "TOKEN_EXPIRED": 4002, "CHARACTER_NOT_OWNED": 4003,
        "RECONNECT_INVALID": 4004, "IDLE_TIMEOUT": 4008, "SESSION_REPLACED": 4009, "TOO_MANY": 4029,
        # Not in the design's list (it has no operator actions): an operator's kick, issue 14.
        "KICKED_BY_OPERATOR": 4010,
    }


def test_every_close_code_is_announced_by_an_error_or_kick() -> None:
    announced = set(v.ERROR_CLOSE_CODES.values())
    assert announced == set(v.CloseCode)


def test_every_error_code_and_kick_reason_has_a_close_code() -> None:
    assert set(v.ERROR_CLOSE_CODES) == set(v.ErrorCode) | set(v.KickReason)
