"""Redis (redis-py): the client, the profile cache, reconnect tokens and session leases.

Modules here ``import redis`` absolutely, which is redis-py, never this package."""
