"""The in-process snapshot of routable listings, so the hot path never queries Postgres.

Built from Postgres at start-up, rebuilt when any process announces a change on Redis pub/sub
(`<prefix>:listings:changed`) and by a periodic poll (the safety net for a missed message).
Readers get an immutable index; a rebuild swaps it whole, so a request never sees half a change.
Provider keys are decrypted once per ciphertext and kept in memory only.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg
from redis.asyncio import Redis

from aichat_gateway.config.catalog import Catalog
from aichat_gateway.config.logging import get_logger
from aichat_gateway.marketplace.capacity import Limits
from aichat_gateway.marketplace.pricing import Price, multiplied
from aichat_gateway.marketplace.ranking import RouteTables
from aichat_gateway.marketplace.vault import Vault, VaultError

log = get_logger(__name__)


class ProviderKey:
    """A provider key that cannot leak through repr, str or a log line by accident."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "ProviderKey(…)"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Route:
    """One (listing, model) pair the router can choose."""

    listing_id: str
    public_id: str
    provider: str
    base_url: str
    api_key: ProviderKey
    model: str
    upstream_model: str
    price: Price
    limits: Limits | None = None  # None: the seller set no limits, so no capacity bookkeeping
    seller_id: str = ""  # named in usage events so settlement pays the seller without asking us


@dataclass(frozen=True, slots=True)
class Index:
    by_model: Mapping[str, tuple[Route, ...]]
    # The router's memo for this snapshot's candidates (`ranking` module docstring), per model on
    # first use; it goes when a rebuild swaps the index, so it never outlives its routes.
    _tables: dict[str, RouteTables] = field(default_factory=dict, init=False, repr=False, compare=False)

    def routes_for(self, model: str) -> tuple[Route, ...]:
        return self.by_model.get(model, ())

    def tables_for(self, model: str) -> RouteTables:
        """The router's tables over `routes_for(model)` (the same tuple: `tables.routes`)."""
        tables = self._tables.get(model)
        if tables is None:
            routes = self.by_model.get(model)
            if routes is None:  # not memoised: a buyer's unknown model names must not grow memory
                return RouteTables(())
            tables = self._tables[model] = RouteTables(routes)
        return tables

    def models(self) -> list[str]:
        return sorted(self.by_model)

    def listing_ids(self) -> set[str]:
        return {route.listing_id for routes in self.by_model.values() for route in routes}


def build_index(rows: list[Mapping[str, object]], keys: Mapping[str, ProviderKey], catalog: Catalog) -> Index:
    """Pure: rows of (listing, model) → routes grouped by model, skipping unpriceable rows."""
    grouped: dict[str, list[Route]] = {}
    for row in rows:
        price = route_price(row, catalog)
        key = keys.get(str(row["listing_id"]))
        if price is None or key is None:
            continue
        model = str(row["model"])
        try:
            limits = Limits.of(row.get("limits") or None)  # type: ignore[arg-type]
        except (ValueError, AttributeError):
            continue  # unreadable limits: never route without the seller's limits applied
        grouped.setdefault(model, []).append(
            Route(
                str(row["listing_id"]),
                str(row["public_id"]),
                str(row["provider"]),
                str(row["base_url"]),
                key,
                model,
                str(row["upstream_model"]),
                price,
                limits if limits.items() else None,
                str(row.get("seller_id") or ""),
            )
        )
    return Index({m: tuple(r) for m, r in grouped.items()})


def route_price(row: Mapping[str, object], catalog: Catalog) -> Price | None:
    multiplier = row["price_multiplier"]
    if isinstance(multiplier, Decimal):
        listed = catalog.get(str(row["model"]))
        if listed is None:
            return None
        return multiplied(Price(listed.input_micro_per_million, listed.output_micro_per_million), multiplier)
    return Price(int(row["input_micro_per_million"]), int(row["output_micro_per_million"]))  # type: ignore[call-overload]


class ListingSnapshot:
    def __init__(self, db: asyncpg.Pool, redis: Redis, vault: Vault, catalog: Catalog, prefix: str) -> None:
        self._db = db
        self._redis = redis
        self._vault = vault
        self._catalog = catalog
        self._channel = f"{prefix}:listings:changed"
        self._keys: dict[str, tuple[str, ProviderKey]] = {}  # listing id -> (ciphertext, key)
        self.index = Index({})
        # Refreshes overlap (a change announced while the poll runs): each query sees the listings as
        # of its start, so only the most recently started one may set the index; an older one that
        # finishes later would bring back a listing deleted in between.
        self._started = 0
        self._applied = 0

    async def refresh(self) -> None:
        self._started += 1
        generation = self._started
        rows = await self._load()
        keys: dict[str, tuple[str, ProviderKey]] = {}
        for row in rows:
            listing_id, ciphertext = str(row["listing_id"]), row["key_ciphertext"]
            cached = self._keys.get(listing_id)
            if cached is not None and cached[0] == ciphertext:
                keys[listing_id] = cached
                continue
            try:
                keys[listing_id] = (ciphertext, ProviderKey(self._vault.decrypt(ciphertext)))
            except VaultError as exc:
                log.error("listing_key_undecryptable", listing_id=listing_id, error=str(exc))
        if generation < self._applied:
            return  # a refresh started after this one has already set a newer index
        self._applied = generation
        self._keys = keys
        self.index = build_index([dict(r) for r in rows], {k: v[1] for k, v in keys.items()}, self._catalog)

    async def _load(self) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._db.fetch(
            """SELECT l.id AS listing_id, l.public_id, l.seller_id, l.provider, l.base_url, l.key_ciphertext,
                      l.price_multiplier, l.input_micro_per_million, l.output_micro_per_million, l.limits,
                      m.model, m.upstream_model
               FROM listings l JOIN listing_models m ON m.listing_id = l.id
               WHERE l.status = 'active' AND l.deleted_at IS NULL"""
        )
        return rows

    async def mark_invalid(self, listing_id: str, reason: str) -> None:
        """The provider rejected the listing's key: stop routing to it everywhere, tell its seller why."""
        await self._db.execute(
            """UPDATE listings SET status = 'invalid', status_reason = $2, updated_at = now()
               WHERE id = $1 AND status <> 'invalid' AND deleted_at IS NULL""",
            uuid.UUID(listing_id),
            reason,
        )
        log.warning("listing_marked_invalid", listing_id=listing_id, reason=reason)
        await self.announce_change()

    async def announce_change(self) -> None:
        """Tell every process (this one included) to rebuild; this one rebuilds right away too."""
        await self.refresh()
        await self._redis.publish(self._channel, b"1")

    async def listen_for_changes(self) -> None:
        """Long-running: rebuild on every announcement. Supervised; re-subscribing rebuilds first."""
        async with self._redis.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            await self.refresh()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    await self.refresh()
