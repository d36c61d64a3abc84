"""Fresh e-mail addresses: data inside a test run stays apart by users of its own."""

from __future__ import annotations

import uuid


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"
