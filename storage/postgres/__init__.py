"""PostgreSQL (psycopg 3): the pool and durability guard, schema migrations (``migrations/*.sql``),
daily partitions, retention with its archives, and the queries of characters, actions, the
session audit and server statistics. No SQL lives outside this package."""
