"""A node's part in ``serve --workers N``: its name and the sockets it listens on.

A worker shares ``server.host:server.port`` with its siblings (``SO_REUSEPORT``: the kernel spreads
new connections over every listening socket of the port) and also listens alone on its own
ops port, where one scrape of ``/metrics`` or ``/readyz`` reaches exactly this worker. A plain
``serve`` (no role) binds the port alone, as always.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import tornado.netutil

from config.settings import ServerSettings

BACKLOG = 1024


@dataclass(frozen=True)
class WorkerRole:
    """Worker ``index`` (1-based) of a supervisor, with its own ``ops_port``."""

    index: int
    ops_port: int

    @property
    def name(self) -> str:
        """The worker's name, ``w<index>``; its node id is ``<host>-w<index>-<random>``."""
        return f"w{self.index}"


def node_name(role: WorkerRole | None) -> str:
    """The stable part of a node id: the host name, plus ``-w<i>`` for a worker."""
    host = socket.gethostname()
    return host if role is None else f"{host}-{role.name}"


def bind_listeners(server: ServerSettings, role: WorkerRole | None) -> tuple[list[socket.socket], int]:
    """The listening sockets of a node and the shared port they serve (the actual one when
    ``server.port`` is 0): alone for a plain node; shared (``SO_REUSEPORT``) plus the worker's
    own ops port for a worker."""
    if role is None:
        sockets = tornado.netutil.bind_sockets(server.port, address=server.host, backlog=BACKLOG)
        return sockets, sockets[0].getsockname()[1]
    shared = tornado.netutil.bind_sockets(server.port, address=server.host, backlog=BACKLOG,
                                          reuse_port=True)
    try:
        own = tornado.netutil.bind_sockets(role.ops_port, address=server.host, backlog=128)
    except OSError:
        for s in shared:
            s.close()
        raise
    return shared + own, shared[0].getsockname()[1]
