"""localstripe (a fake, stateful Stripe server from PyPI) as a subprocess on a free port, for tests.

What it does and does not do (read from its source, 1.15.10):
- A PaymentIntent is paid by creating a PaymentMethod with a test card, setting it on the intent
  (`POST /v1/payment_intents/<id>` with `payment_method`) and confirming it. 4242424242424242
  succeeds; 4000000000000341 is declined at confirm (402, and a payment_intent.payment_failed event).
- Its PaymentIntent JSON has no `amount_received`; the succeeded charge in `charges.data[]` (and
  `latest_charge`, expanded) carries the amount.
- Webhooks: `POST /_config/webhooks/<name>` with url, secret and optional events[]; it sends
  payment_intent.* events signed like Stripe (t=<created>,v1=HMAC-SHA256(secret, "t.body")) about a
  second after they happen. It has no disputes and sends no charge.refunded: tests sign those
  events themselves.
- It keeps state in memory (and dumps it to /tmp/localstripe.pickle, which `--from-scratch` never
  reads back), so every instance starts empty.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port

LOCALSTRIPE = str(Path(sys.executable).with_name("localstripe"))
START_TIMEOUT = 30.0
CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000341"


@dataclass
class LocalStripe:
    url: str
    secret_key: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def register_webhook(self, name: str, url: str, secret: str, events: Sequence[str] | None = None) -> None:
        data: dict[str, str] = {"url": url, "secret": secret}
        for i, event in enumerate(events or ()):
            data[f"events[{i}]"] = event
        httpx.post(f"{self.url}/_config/webhooks/{name}", data=data, timeout=10).raise_for_status()

    async def call(self, method: str, path: str, data: dict[str, str] | None = None) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as client:
            response = await client.request(
                method, path, data=data, headers={"Authorization": f"Bearer {self.secret_key}"}
            )
        return response.status_code, response.json()

    async def pay(self, payment_intent_id: str, card: str = CARD_OK) -> tuple[int, dict[str, Any]]:
        """Pay a PaymentIntent with a test card, as Stripe.js would: (status of the confirm, its body)."""
        status, method = await self.call(
            "POST",
            "/v1/payment_methods",
            {
                "type": "card",
                "card[number]": card,
                "card[exp_month]": "12",
                "card[exp_year]": "2040",
                "card[cvc]": "123",
            },
        )
        assert status == 200, method
        status, _ = await self.call(
            "POST", f"/v1/payment_intents/{payment_intent_id}", {"payment_method": method["id"]}
        )
        assert status == 200
        status, body = await self.call("POST", f"/v1/payment_intents/{payment_intent_id}/confirm")
        return int(status), dict(body)

    async def payment_intent(self, payment_intent_id: str) -> dict[str, Any]:
        status, body = await self.call("GET", f"/v1/payment_intents/{payment_intent_id}")
        assert status == 200, body
        return dict(body)

    async def charge_of(self, payment_intent_id: str) -> str:
        latest = (await self.payment_intent(payment_intent_id))["latest_charge"]
        return str(latest["id"] if isinstance(latest, dict) else latest)

    async def refund(self, charge_id: str, amount_cents: int | None = None) -> dict[str, Any]:
        data = {"charge": charge_id}
        if amount_cents is not None:
            data["amount"] = str(amount_cents)
        status, body = await self.call("POST", "/v1/refunds", data)
        assert status == 200, body
        return dict(body)


@contextlib.contextmanager
def running_localstripe(log_dir: Path, secret_key: str) -> Iterator[LocalStripe]:
    """Start localstripe on a free port; yield once it answers; kill it on exit (also on failure)."""
    port = free_port()
    log_path = log_dir / f"localstripe-{port}.log"
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(
            [LOCALSTRIPE, "--port", str(port), "--from-scratch"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=log_dir,
            start_new_session=True,
        )
    server = LocalStripe(f"http://127.0.0.1:{port}", secret_key, popen, log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        if popen.poll() is None:
            popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=10)


def _wait_ready(server: LocalStripe) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if server.popen.poll() is not None:
            raise AssertionError(f"localstripe exited with {server.popen.returncode}:\n{server.logs()[-4000:]}")
        try:
            response = httpx.get(
                server.url + "/v1/customers", headers={"Authorization": f"Bearer {server.secret_key}"}, timeout=1
            )
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"localstripe not ready after {START_TIMEOUT}s:\n{server.logs()[-4000:]}")
        time.sleep(0.05)
