import asyncpg


async def test_fresh_database_is_migrated(conn: asyncpg.Connection) -> None:
    n = await conn.fetchval("SELECT count(*) FROM gorp_migrations")
    assert n >= 3
    assert await conn.fetchval("SELECT count(*) FROM scripts") == 0
