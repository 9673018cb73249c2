"""Backfill users from Clerk's Backend API: what webhooks missed while the service was away.

Svix gives up on a delivery after about 27 hours of retries. Clerk recommends reading its
Backend API to catch up: `GET /v1/users` pages through every user (`limit` up to 500,
`offset`), ordered by creation so the pages stay stable while new users sign up. A 429
carries `Retry-After`, which is waited out.

Each page goes through `users.upsert_many_from_clerk`, the function the `user.created` and
`user.updated` webhooks use, with the same profile mapping (`clerk_events.profile_from_user`):
the same `updated_at` ordering (a user newer here than in the page is left alone) and the
same tombstones (a user deleted here stays deleted).

Users deleted in Clerk while webhooks were missed are not in any page. After the pages,
stored users whose Clerk id no page had are each asked for (`GET /v1/users/{id}`): offset
paging skips users when others are deleted meanwhile, so absence alone proves nothing. A
404 is gone (reported; deleted only on request, through `users.delete_from_clerk`, the
`user.deleted` webhook's function); a 200 is applied like a page user.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from datadiver_graph.domain import users
from datadiver_graph.domain.clerk_events import profile_from_user
from datadiver_graph.domain.errors import DomainError, InvalidInput
from datadiver_graph.domain.store import Store

CLERK_API_URL = "https://api.clerk.com/v1"
PAGE_SIZE = 500  # the most Clerk's list endpoints return at once
MAX_ATTEMPTS = 8  # per request, over 429s and server errors
MAX_WAIT_S = 60.0
STORED_BATCH = 1000  # stored Clerk ids read per query when looking for users gone from Clerk


class ClerkApiError(DomainError):
    """Clerk refused or failed a request in a way waiting does not fix."""


@dataclass(slots=True)
class SyncReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)  # one line per skipped user
    looked_up: int = 0  # stored users no page had, asked for one by one
    gone: list[str] = field(default_factory=list)  # Clerk ids Clerk answered 404 for
    deleted: int = 0
    listed_here: int = 0  # users Clerk has that were stored here before the sync


Sleep = Callable[[float], Awaitable[None]]


def retry_after(value: str | None, default: float) -> float:
    """`Retry-After` in seconds: a number, or an HTTP date."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


async def user_pages(
    client: httpx.AsyncClient,
    secret_key: str,
    *,
    base_url: str = CLERK_API_URL,
    page_size: int = PAGE_SIZE,
    sleep: Sleep = asyncio.sleep,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every Clerk user, a page at a time."""
    offset = 0
    while True:
        page = await _get_page(client, secret_key, base_url, page_size, offset, sleep)
        if page:
            yield page
        if len(page) < page_size:
            return
        offset += len(page)


async def _get_page(
    client: httpx.AsyncClient,
    secret_key: str,
    base_url: str,
    limit: int,
    offset: int,
    sleep: Sleep,
) -> list[dict[str, Any]]:
    url = f"{base_url.rstrip('/')}/users"
    params: dict[str, str | int] = {"limit": limit, "offset": offset, "order_by": "+created_at"}
    response = await _get(client, secret_key, url, params, sleep)
    body = response.json()
    # The list is a bare array; a paginated envelope `{data, total_count}` is read too.
    data = body.get("data") if isinstance(body, dict) else body
    if not isinstance(data, list):
        raise ClerkApiError("Clerk's user list is not a JSON array")
    return [user for user in data if isinstance(user, dict)]


async def get_user(
    client: httpx.AsyncClient,
    secret_key: str,
    external_id: str,
    *,
    base_url: str = CLERK_API_URL,
    sleep: Sleep = asyncio.sleep,
) -> dict[str, Any] | None:
    """One Clerk user, or None when Clerk no longer has it (404)."""
    url = f"{base_url.rstrip('/')}/users/{quote(external_id, safe='')}"
    response = await _get(client, secret_key, url, {}, sleep, missing_ok=True)
    if response.status_code == 404:
        return None
    body = response.json()
    if not isinstance(body, dict):
        raise ClerkApiError(f"Clerk's user {external_id} is not a JSON object")
    return body


async def _get(
    client: httpx.AsyncClient,
    secret_key: str,
    url: str,
    params: dict[str, str | int],
    sleep: Sleep,
    *,
    missing_ok: bool = False,
) -> httpx.Response:
    """A 200 (or a 404 when `missing_ok`), after waiting out 429s, 5xx and lost connections."""
    headers = {"Authorization": f"Bearer {secret_key}"}
    for attempt in range(MAX_ATTEMPTS):
        try:
            response = await client.get(url, params=params, headers=headers)
        except httpx.TransportError as exc:
            if attempt == MAX_ATTEMPTS - 1:
                raise ClerkApiError(f"cannot reach Clerk at {url}: {exc}") from None
            await sleep(min(2.0**attempt, MAX_WAIT_S))
            continue
        if response.status_code == 429 or response.status_code >= 500:
            if attempt == MAX_ATTEMPTS - 1:
                break
            wait = retry_after(response.headers.get("retry-after"), min(2.0**attempt, MAX_WAIT_S))
            await sleep(min(wait, MAX_WAIT_S))
            continue
        if response.status_code in (401, 403):
            raise ClerkApiError(f"Clerk refused CLERK_SECRET_KEY ({response.status_code})")
        if response.status_code == 200 or (missing_ok and response.status_code == 404):
            return response
        raise ClerkApiError(f"Clerk answered {response.status_code} for {url}")
    raise ClerkApiError(f"Clerk kept refusing {url} (rate limited or failing); try again later")


async def apply_page(
    store: Store, page: list[dict[str, Any]], report: SyncReport, *, dry_run: bool
) -> None:
    """Classify each user against what is stored and, unless `dry_run`, write it."""
    profiles: list[users.ClerkProfile] = []
    for data in page:
        try:
            profiles.append(profile_from_user(data))
        except InvalidInput as exc:
            report.skipped += 1
            report.reasons.append(f"{data.get('id')!r}: {exc.message}")
    seen: dict[str, users.ClerkProfile] = {p.external_id: p for p in profiles}
    profiles = list(seen.values())  # a user repeated across an offset shift: once
    if not profiles:
        return
    rows = await store.db.look_up(
        [{"externalId": p.external_id} for p in profiles], *users.stored_lookups("externalId")
    )
    writes: list[tuple[users.ClerkProfile, Any]] = []
    for profile, row in zip(profiles, rows, strict=True):
        current = row["user"][0] if row["user"] else None
        if current is not None or row["tombstone"]:
            report.listed_here += 1
        if row["tombstone"]:
            report.skipped += 1
            report.reasons.append(f"{profile.external_id}: deleted here (stays deleted)")
        elif current is None:
            writes.append((profile, row))
        elif _unchanged(profile, current):
            report.unchanged += 1
        elif _newer_here(profile, current):
            report.skipped += 1
            report.reasons.append(f"{profile.external_id}: newer here than in Clerk")
        else:
            writes.append((profile, row))
    if dry_run:
        for _profile, row in writes:
            if row["user"]:
                report.updated += 1
            else:
                report.created += 1
        return
    written = await users.upsert_many_from_clerk(
        store, [p for p, _ in writes], [row for _, row in writes]
    )
    for (profile, row), user in zip(writes, written, strict=True):
        if user is None:  # deleted or changed meanwhile by a webhook: it wins
            report.skipped += 1
            report.reasons.append(f"{profile.external_id}: changed here meanwhile")
        elif row["user"]:
            report.updated += 1
        else:
            report.created += 1


def _unchanged(profile: users.ClerkProfile, current: dict[str, Any]) -> bool:
    """Stored as of the same Clerk `updated_at` (which the webhooks would also skip), or
    with the same fields."""
    stored_at = current.get("clerkUpdatedAt")
    if profile.updated_at is not None and stored_at == profile.updated_at:
        return True
    return (
        stored_at == profile.updated_at
        and current.get("name") == profile.name
        and current.get("email") == profile.email
        and current.get("imageUrl") == profile.image_url
    )


def _newer_here(profile: users.ClerkProfile, current: dict[str, Any]) -> bool:
    stored_at = current.get("clerkUpdatedAt")
    return (
        profile.updated_at is not None and stored_at is not None and stored_at > profile.updated_at
    )


async def sync_users(
    store: Store,
    client: httpx.AsyncClient,
    secret_key: str,
    *,
    base_url: str = CLERK_API_URL,
    page_size: int = PAGE_SIZE,
    dry_run: bool = False,
    sleep: Sleep = asyncio.sleep,
    on_page: Callable[[SyncReport], None] | None = None,
) -> SyncReport:
    """Apply every page, then look for users gone from Clerk (`report.gone`); deleting
    them is the caller's choice (`delete_gone`)."""
    report = SyncReport()
    seen: set[str] = set()  # every Clerk id listed: about 100 bytes each
    async for page in user_pages(
        client, secret_key, base_url=base_url, page_size=page_size, sleep=sleep
    ):
        seen.update(user["id"] for user in page if isinstance(user.get("id"), str))
        await apply_page(store, page, report, dry_run=dry_run)
        if on_page is not None:
            on_page(report)
    async for unlisted in _unlisted(store, seen):
        found: list[dict[str, Any]] = []
        for external_id in unlisted:
            data = await get_user(client, secret_key, external_id, base_url=base_url, sleep=sleep)
            report.looked_up += 1
            if data is None:
                report.gone.append(external_id)
            else:  # skipped by an offset shift: still in Clerk
                found.append(data)
        await apply_page(store, found, report, dry_run=dry_run)
        if on_page is not None:
            on_page(report)
    return report


async def _unlisted(store: Store, seen: set[str]) -> AsyncIterator[list[str]]:
    """Stored, not deleted users no page listed, a batch at a time in Clerk id order.

    One streamed read of every stored Clerk id, in the database's natural order, keeps
    only those no page listed; the lookups come after it, so no cursor idles through a
    rate-limit wait. Natural order, not keyset batches on the index: the embedded
    database reads the whole rest of an index range for each batch.
    """
    stored = store.db.users.find({}, {"_id": 0, "externalId": 1}).batch_size(STORED_BATCH)
    missing = sorted(
        [doc["externalId"] async for doc in stored if doc.get("externalId") not in seen]
    )
    for start in range(0, len(missing), STORED_BATCH):
        batch = missing[start : start + STORED_BATCH]
        # A document a late upsert left beside its tombstone is deleted already.
        tombstones = store.db.collection(users.TOMBSTONES).find({"_id": {"$in": batch}}, {"_id": 1})
        deleted = {doc["_id"] async for doc in tombstones}
        unlisted = [external_id for external_id in batch if external_id not in deleted]
        if unlisted:
            yield unlisted


async def delete_gone(
    store: Store, report: SyncReport, on_deleted: Callable[[SyncReport], None] | None = None
) -> None:
    """Delete each user Clerk answered 404 for, as its missed `user.deleted` would have."""
    refuse_unrelated_instance(report)
    for external_id in report.gone:
        await users.delete_from_clerk(store, external_id)
        report.deleted += 1
        if on_deleted is not None:
            on_deleted(report)


def refuse_unrelated_instance(report: SyncReport) -> None:
    """A secret key of another Clerk instance (say, development instead of production)
    lists none of the users stored here, and every one of them answers 404: deleting
    them all would be the sync's worst mistake, so it is refused."""
    if report.gone and report.listed_here == 0:
        raise ClerkApiError(
            f"refusing to delete: Clerk listed none of the users stored here, and all "
            f"{len(report.gone)} it was asked for are unknown to it; check that "
            "CLERK_SECRET_KEY is this instance's key (Clerk dashboard > API keys)"
        )
