import asyncio
import httpx
import pytest
from aichat_gateway.proxy.background import Supervisor

orig = Supervisor.stop

async def stop(self):
    t = asyncio.ensure_future(orig(self))
    done, _ = await asyncio.wait([t], timeout=5)
    if not done:
        for task in asyncio.all_tasks():
            print("TASK", task.get_name())
            coro = task.get_coro()
            while coro is not None:
                frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None) or getattr(coro, "gi_frame", None)
                if frame is not None:
                    print("   ", frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name)
                coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None) or getattr(coro, "gi_yieldfrom", None)
    await t

@pytest.fixture
def patched(monkeypatch):
    monkeypatch.setattr(Supervisor, "stop", stop)

@pytest.mark.parametrize('i', range(8))
async def test_dbg(i, patched, client) -> None:
    r = await client.get("/api/auth/me")
    assert r.status_code == 401
