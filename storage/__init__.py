"""tilehall storage: everything that talks to PostgreSQL or Redis, one subpackage per concern.

- :mod:`storage.postgres` — the durable truth: connection pool, migrations, partitions,
  retention and archives, and every SQL query the server runs;
- :mod:`storage.redis` — the shared ephemeral state: the client, profile cache, reconnect
  tokens and session leases;
- :mod:`storage.relay` — the cross-node zone relay over Redis pub/sub;
- :mod:`storage.embedded` — the zero-setup embedded PostgreSQL and Redis servers.
"""
