"""Taking ownership of a character (DESIGN section 3 rule 3): the row a new owner starts from.

# merged with the storage branch: there ``take_ownership`` lives in
# ``storage.postgres.characters`` and is one statement, ``UPDATE character_profile SET
# owner_epoch = owner_epoch + 1 WHERE character_id = %s RETURNING ...`` (it waits for the row
# lock, so it starts from the row after the old owner's last commit landed, and fences off any
# later write of the old owner). This branch's schema has no ``owner_epoch`` column yet, so this
# stand-in only re-reads the row; the transport calls it at the same moment either way.
"""

from __future__ import annotations

import psycopg

from storage.postgres.characters import CharacterRecord, load_character


def take_ownership(conn: psycopg.Connection, character_id: str) -> CharacterRecord | None:
    """The committed row a new owner of ``character_id`` starts from (None: no such character)."""
    return load_character(conn, character_id)
