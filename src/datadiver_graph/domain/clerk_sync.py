"""Backfill users from Clerk's Backend API: what webhooks missed while the service was away.

Svix gives up on a delivery after about 27 hours of retries. Clerk recommends reading its
Backend API to catch up: `GET /v1/users` pages through every user (`limit` up to 500,
`offset`), ordered by creation so the pages stay stable while new users sign up. A 429
carries `Retry-After`, which is waited out.

Each page goes through `users.upsert_many_from_clerk`, the function the `user.created` and
`user.updated` webhooks use, with the same profile mapping (`clerk_events.profile_from_user`):
the same `updated_at` ordering (a user newer here than in the page is left alone) and the
same tombstones (a user deleted here by webhook stays deleted).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from datadiver_graph.domain import users
from datadiver_graph.domain.clerk_events import profile_from_user
from datadiver_graph.domain.errors import DomainError, InvalidInput
from datadiver_graph.domain.store import Store

CLERK_API_URL = "https://api.clerk.com/v1"
PAGE_SIZE = 500  # the most Clerk's list endpoints return at once
MAX_ATTEMPTS = 8  # per page, over 429s and server errors
MAX_WAIT_S = 60.0


class ClerkApiError(DomainError):
    """Clerk refused or failed a request in a way waiting does not fix."""


@dataclass(slots=True)
class SyncReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)  # one line per skipped user


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
        if response.status_code != 200:
            raise ClerkApiError(f"Clerk answered {response.status_code} for {url}")
        body = response.json()
        # The list is a bare array; a paginated envelope `{data, total_count}` is read too.
        data = body.get("data") if isinstance(body, dict) else body
        if not isinstance(data, list):
            raise ClerkApiError("Clerk's user list is not a JSON array")
        return [user for user in data if isinstance(user, dict)]
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
        if row["tombstone"]:
            report.skipped += 1
            report.reasons.append(f"{profile.external_id}: deleted here (by webhook)")
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
    report = SyncReport()
    async for page in user_pages(
        client, secret_key, base_url=base_url, page_size=page_size, sleep=sleep
    ):
        await apply_page(store, page, report, dry_run=dry_run)
        if on_page is not None:
            on_page(report)
    return report
