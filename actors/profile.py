"""Pydantic models of a character's durable jsonb columns: ``inventory_json`` and ``stats_json``.

Models are strict (no coercion: ``"10"`` is not a strength) and refuse unknown fields. Anything
written to PostgreSQL goes through :func:`dump_checked`, which enforces the size limit
(``game.max_json_bytes``, 16 KiB by default) on the compact UTF-8 serialisation.
"""

from __future__ import annotations

import json
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

MAX_INVENTORY_ITEMS = 64

ItemKind = Literal["potion", "gem", "herb"]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class InventoryItem(_Strict):
    """One carried item: its id (from the map, like ``item-3``) and kind."""

    item_id: str = Field(min_length=1, max_length=64)
    kind: ItemKind


class Inventory(_Strict):
    """What a character carries (``inventory_json``), at most 64 items, oldest first."""

    items: list[InventoryItem] = Field(default_factory=list, max_length=MAX_INVENTORY_ITEMS)


class Stats(_Strict):
    """A character's attributes and counters (``stats_json``)."""

    max_health: int = Field(100, ge=1, le=10_000)
    strength: int = Field(10, ge=0, le=10_000)
    defense: int = Field(2, ge=0, le=10_000)
    level: int = Field(1, ge=1, le=1_000)
    xp: int = Field(0, ge=0)
    defeats: int = Field(0, ge=0)


# The column each model is stored in, for error messages.
_COLUMN = {Inventory: "inventory_json", Stats: "stats_json"}

M = TypeVar("M", bound=BaseModel)


def dump_checked(model: BaseModel, max_bytes: int) -> str:
    """Compact JSON of ``model``; ValueError("inventory_json is N bytes, limit M") past the limit."""
    text = model.model_dump_json()
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        name = _COLUMN.get(type(model), type(model).__name__)
        raise ValueError(f"{name} is {size} bytes, limit {max_bytes}")
    return text


def load_checked(model_cls: type[M], raw: object, max_bytes: int | None = None) -> M:
    """Validate a stored column value (dict from psycopg jsonb, or JSON text/bytes; None = default).

    Raises ValueError (pydantic's ValidationError is one) when the value is invalid or, given
    ``max_bytes``, JSON text larger than the limit.
    """
    if raw is None:
        return model_cls()
    if isinstance(raw, (str, bytes, bytearray)):
        size = len(raw.encode("utf-8")) if isinstance(raw, str) else len(raw)
        if max_bytes is not None and size > max_bytes:
            name = _COLUMN.get(model_cls, model_cls.__name__)
            raise ValueError(f"{name} is {size} bytes, limit {max_bytes}")
        return model_cls.model_validate_json(raw)
    if max_bytes is not None:
        # Re-serialise to measure: a dict from jsonb has no byte size of its own.
        size = len(json.dumps(raw, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if size > max_bytes:
            name = _COLUMN.get(model_cls, model_cls.__name__)
            raise ValueError(f"{name} is {size} bytes, limit {max_bytes}")
    return model_cls.model_validate(raw)
