"""A subscription names a subscriber and a list that exist, and goes with them (migration 0010).

The two foreign keys of subscriptions became statement triggers: every DELETE path still takes the person's or
the list's subscriptions (and their confirmation tokens) with it, a subscription to nobody is refused, and a
subscription added while its subscriber or list is deleted is either deleted with it or refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from newsletter.db.database import Database
from newsletter.services.audience import lists
from newsletter.services.compliance import privacy
from tests.harness import add_confirmed

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4) as created:
        yield created


async def two_lists_of_two(pool: asyncpg.Pool) -> None:
    """person0 and person1 on the default list and on 'weekly', person1's weekly subscription pending with its
    confirmation token."""
    await pool.execute("INSERT INTO lists (slug, name) VALUES ('weekly', 'Weekly')")
    await add_confirmed(pool, 2, prefix="person")
    await pool.execute(
        """
        INSERT INTO subscriptions (subscriber_id, list_id, status, source)
        SELECT subscribers.id, lists.id,
               CASE WHEN subscribers.id = 1 THEN 'confirmed' ELSE 'pending' END, 'form'
        FROM subscribers, lists WHERE lists.slug = 'weekly';
        INSERT INTO confirmation_tokens (token_hash, subscriber_id, list_id, expires_at)
        SELECT 'token', 2, id, now() + interval '1 day' FROM lists WHERE slug = 'weekly';
        """
    )


async def subscriptions(pool: asyncpg.Pool) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        """
        SELECT subscribers.email, lists.slug FROM subscriptions
        LEFT JOIN subscribers ON subscribers.id = subscriptions.subscriber_id
        LEFT JOIN lists ON lists.id = subscriptions.list_id
        ORDER BY 1, 2
        """
    )
    return [(row["email"], row["slug"]) for row in rows]


async def test_erasing_a_subscriber_deletes_their_subscriptions_and_tokens(pool: asyncpg.Pool) -> None:
    await two_lists_of_two(pool)

    async with pool.acquire() as conn:
        await privacy.erase(Database.on(conn), 2)

    assert await subscriptions(pool) == [
        ("person0@example.com", "default"),
        ("person0@example.com", "weekly"),
    ]
    assert await pool.fetchval("SELECT count(*) FROM confirmation_tokens") == 0


async def test_purging_stale_sign_ups_deletes_their_subscriptions(pool: asyncpg.Pool) -> None:
    await pool.execute(
        """
        WITH person AS (
            INSERT INTO subscribers (email, created_at)
            VALUES ('stale@example.com', now() - interval '90 days')
            RETURNING id
        )
        INSERT INTO subscriptions (subscriber_id, list_id, status) SELECT id, 1, 'pending' FROM person
        """
    )

    assert await privacy.purge_unconfirmed(Database(pool), 30) == 1
    assert await pool.fetchval("SELECT count(*) FROM subscriptions") == 0


async def test_deleting_a_list_deletes_its_subscriptions_and_tokens(pool: asyncpg.Pool) -> None:
    await two_lists_of_two(pool)

    await lists.delete_list(Database(pool), await pool.fetchval("SELECT id FROM lists WHERE slug = 'weekly'"))

    assert await subscriptions(pool) == [
        ("person0@example.com", "default"),
        ("person1@example.com", "default"),
    ]
    assert await pool.fetchval("SELECT count(*) FROM confirmation_tokens") == 0


async def test_any_delete_or_truncate_takes_the_subscriptions_along(pool: asyncpg.Pool) -> None:
    await two_lists_of_two(pool)

    await pool.execute("DELETE FROM subscribers WHERE email LIKE 'person0%'")
    assert await subscriptions(pool) == [
        ("person1@example.com", "default"),
        ("person1@example.com", "weekly"),
    ]
    await pool.execute("TRUNCATE subscribers")
    assert await subscriptions(pool) == []
    assert await pool.fetchval("SELECT count(*) FROM confirmation_tokens") == 0


async def test_a_subscription_to_nobody_or_to_no_list_is_refused(pool: asyncpg.Pool) -> None:
    await pool.execute("INSERT INTO lists (slug, name) VALUES ('weekly', 'Weekly')")
    await add_confirmed(pool, 1)

    with pytest.raises(asyncpg.ForeignKeyViolationError, match="subscriber") as nobody:
        await pool.execute(
            "INSERT INTO subscriptions (subscriber_id, list_id, status) "
            "VALUES (1, 2, 'pending'), (99, 2, 'pending')"
        )
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="list") as no_list:
        await pool.execute(
            "INSERT INTO subscriptions (subscriber_id, list_id, status) VALUES (1, 42, 'pending')"
        )
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="list") as among_lists:
        await pool.execute(
            "INSERT INTO subscriptions (subscriber_id, list_id, status) "
            "VALUES (1, 2, 'pending'), (1, 43, 'pending')"
        )
    with pytest.raises(asyncpg.ForeignKeyViolationError, match="cannot change"):
        await pool.execute("UPDATE subscriptions SET subscriber_id = 99")

    assert "Key (subscriber_id)=(99)" in str(nobody.value.detail)
    assert "Key (list_id)=(42)" in str(no_list.value.detail)
    assert "Key (list_id)=(43)" in str(among_lists.value.detail)
    await pool.execute("UPDATE subscriptions SET status = 'unsubscribed', list_id = 1")  # unchanged keys pass
    assert await subscriptions(pool) == [("reader0@example.com", "default")]
    await pool.execute("INSERT INTO subscribers (email) VALUES ('other@example.com')")
    await pool.execute(
        "INSERT INTO subscriptions (subscriber_id, list_id, status) "
        "VALUES (2, 1, 'pending'), (2, 2, 'pending')"
    )
    assert await subscriptions(pool) == [
        ("other@example.com", "default"),
        ("other@example.com", "weekly"),
        ("reader0@example.com", "default"),
    ]


async def orphans(pool: asyncpg.Pool) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM subscriptions WHERE subscriber_id NOT IN (SELECT id FROM subscribers) "
        "OR list_id NOT IN (SELECT id FROM lists)"
    )
    return count


async def waits_on_a_lock(pool: asyncpg.Pool, pid: int) -> bool:
    for _ in range(100):
        waiting = await pool.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid
        )
        if waiting:
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize("deleted", ["subscriber", "list"])
async def test_a_subscription_added_during_a_delete_is_refused_once_the_delete_commits(
    pool: asyncpg.Pool, deleted: str
) -> None:
    await pool.execute("INSERT INTO lists (slug, name) VALUES ('weekly', 'Weekly')")
    await add_confirmed(pool, 1)
    delete = {
        "subscriber": "DELETE FROM subscribers WHERE id = 1",
        "list": "DELETE FROM lists WHERE slug = 'weekly'",
    }[deleted]

    async with pool.acquire() as deleting, pool.acquire() as adding:
        transaction = deleting.transaction()
        await transaction.start()
        await deleting.execute(delete)
        add = asyncio.ensure_future(
            adding.execute(
                "INSERT INTO subscriptions (subscriber_id, list_id, status) "
                "SELECT 1, id, 'pending' FROM lists WHERE slug = 'weekly'"
            )
        )
        assert await waits_on_a_lock(pool, adding.get_server_pid())
        await transaction.commit()
        with pytest.raises(asyncpg.ForeignKeyViolationError, match=deleted):
            await add

    assert await orphans(pool) == 0
    assert await pool.fetchval("SELECT count(*) FROM subscriptions WHERE list_id <> 1") == 0


@pytest.mark.parametrize("deleted", ["subscriber", "list"])
async def test_a_delete_during_an_added_subscription_waits_and_takes_it_along(
    pool: asyncpg.Pool, deleted: str
) -> None:
    await pool.execute("INSERT INTO lists (slug, name) VALUES ('weekly', 'Weekly')")
    await add_confirmed(pool, 1)
    delete = {
        "subscriber": "DELETE FROM subscribers WHERE id = 1",
        "list": "DELETE FROM lists WHERE slug = 'weekly'",
    }[deleted]

    async with pool.acquire() as adding, pool.acquire() as deleting:
        transaction = adding.transaction()
        await transaction.start()
        await adding.execute(
            "INSERT INTO subscriptions (subscriber_id, list_id, status) "
            "SELECT 1, id, 'pending' FROM lists WHERE slug = 'weekly'"
        )
        remove = asyncio.ensure_future(deleting.execute(delete))
        assert await waits_on_a_lock(pool, deleting.get_server_pid())
        await transaction.commit()
        await remove

    assert await orphans(pool) == 0
    assert await pool.fetchval("SELECT count(*) FROM subscriptions WHERE list_id <> 1") == 0
