"""The constrained field types that protocol v1's client and server frames share.

A seq is a PostgreSQL bigint, ids are UUIDs (lower-cased on the way in), timestamps are ISO
8601 UTC with a ``Z``. Nothing here does I/O.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

# PostgreSQL bigint: a sequence number above this could never be stored.
MAX_SEQ = 2**63 - 1

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
ISO_UTC_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"

UuidStr = Annotated[str, StringConstraints(pattern=UUID_PATTERN, to_lower=True)]
IsoUtc = Annotated[str, StringConstraints(pattern=ISO_UTC_PATTERN)]
Seq = Annotated[int, Field(ge=1, le=MAX_SEQ)]
SeqOrZero = Annotated[int, Field(ge=0, le=MAX_SEQ)]
ProtocolVersion = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=8192)]
ReconnectTokenStr = Annotated[str, StringConstraints(min_length=16, max_length=128)]
ShortId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
