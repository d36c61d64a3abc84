"""Reading a request body under a size cap: one reader for every package's HTTP handlers.

The body is refused as soon as its declared length or the bytes read so far pass the cap, so a
huge body is never buffered whole before it is refused. The caller says what to raise: each
package answers in its own error tree (OpenAI errors on `/v1`, the REST API's elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request


async def read_capped(request: Request, max_bytes: int, too_large: Callable[[], Exception]) -> bytes:
    declared = request.headers.get("content-length", "")
    # isascii: "²" is a digit to str.isdigit() but not to int() (a 500 instead of a refusal).
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)
