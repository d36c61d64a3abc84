"""The usage events the gateways append to their Redis Stream (`<prefix>:usage`), read by request."""

from __future__ import annotations

import redis as redis_sync

from aichat_gateway.billing.meter import decode_entry
from tests.support.waiting import await_until


class UsageEvents:
    """Reads `<prefix>:usage` (the Redis Stream the meter appends to)."""

    def __init__(self, client: redis_sync.Redis, prefix: str) -> None:
        self.client = client
        self.stream = f"{prefix}:usage"

    def for_request(self, request_id: str) -> list[dict[str, str]]:
        entries = self.client.xrange(self.stream)
        found = []
        for _, fields in entries:
            decoded = decode_entry(fields)
            booked = decoded.get("request_id", "")
            # A request id the client chose is booked with a unique suffix (edge.charge_id).
            if booked == request_id or booked.rsplit(".", 1)[0] == request_id:
                found.append(decoded)
        return found

    async def wait_for(self, request_id: str, within: float = 5.0) -> list[dict[str, str]]:
        """The events of one request, once at least one is there."""
        found: list[dict[str, str]] = []

        def check() -> bool:
            nonlocal found
            found = self.for_request(request_id)
            return bool(found)

        await await_until(check, within, f"a usage event for {request_id}")
        return found
