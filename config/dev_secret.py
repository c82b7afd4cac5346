"""The dev issuer's HS256 secret: one per install, kept in ``<var_dir>/dev-secret`` (mode 0600).

Created on first use with :func:`secrets.token_urlsafe`, so no two installs share a secret and
none is written in the source. Every process of one install (cluster nodes, workers, the
``tilehall token`` command) reads the same file, or is given the secret explicitly with
``auth.dev_secret`` / ``TILEHALL_AUTH__DEV_SECRET``, which always wins.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DEV_SECRET_FILE = "dev-secret"
DEV_SECRET_BYTES = 32
MIN_DEV_SECRET_CHARS = 32


def dev_secret_path(var_dir: str | Path) -> Path:
    """Where the install's dev secret lives."""
    return Path(var_dir) / DEV_SECRET_FILE


def load_or_create_dev_secret(var_dir: str | Path) -> str:
    """The secret in ``<var_dir>/dev-secret``, created (0600) when missing.

    Safe when several processes start at once: the file appears whole (written aside, then
    hard-linked into place, which fails if another process won), and everyone reads the winner.
    Raises ``ValueError`` for a file that is too short or readable by others.
    """
    path = dev_secret_path(var_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{DEV_SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(secrets.token_urlsafe(DEV_SECRET_BYTES) + "\n")
            try:
                os.link(aside, path)
            except FileExistsError:
                pass  # another process of this install created it first: use theirs
        finally:
            aside.unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        raise ValueError(f"{path} is readable by other users; chmod 600 it (or delete it to get a new one)")
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < MIN_DEV_SECRET_CHARS:
        raise ValueError(f"{path} holds fewer than {MIN_DEV_SECRET_CHARS} characters; delete it to get a new one")
    return secret
