"""The dashboard suite: one gateway process with its fake provider, and Debian's chromium.

The gateway serves the real site on a database and Redis prefix of this suite's own. Each test
gets a fresh browser context (no cookies), so tests never see each other's sessions. Playwright's
own browser download cannot work offline: the browser is `chromium` from Debian (`.ci/run`
installs it when missing).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from aichat_gateway.config.settings import load_settings
from tests.support.browser import Site
from tests.support.fakes import spawn_fake
from tests.support.gateways import GatewayFactory
from tests.support.localstripe import LocalStripe, running_localstripe
from tests.support.processes import Processes
from tests.support.scratch import TEST_REDIS_URL, TEST_SECRET, migrated_database
from tests.support.scratch import redis_prefix as scratch_redis_prefix

pytestmark = pytest.mark.e2e
ACTION_TIMEOUT_MS = 10_000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def e2e_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    owner = Processes(tmp_path_factory.mktemp("e2e-processes"))
    try:
        yield owner
    finally:
        owner.close()


# ---- Stripe: localstripe for the site's top-ups (its Stripe.js, API and signed webhooks) ----
STRIPE_SECRET = "sk_test_" + uuid.uuid4().hex
STRIPE_PUBLISHABLE = "pk_test_" + uuid.uuid4().hex
STRIPE_WEBHOOK_SECRET = "whsec_e2e_" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    with running_localstripe(Path(tmp_path_factory.mktemp("localstripe")), STRIPE_SECRET) as server:
        yield server


def stripe_env(stripe: LocalStripe) -> dict[str, str]:
    """The site gateway's Stripe settings: everything at localstripe, Stripe.js included."""
    return {
        "STRIPE_SECRET_KEY": STRIPE_SECRET,
        "STRIPE_PUBLISHABLE_KEY": STRIPE_PUBLISHABLE,
        "STRIPE_WEBHOOK_SECRET": STRIPE_WEBHOOK_SECRET,
        "STRIPE_API_BASE": stripe.url,
        "STRIPE_JS_URL": f"{stripe.url}/js.stripe.com/v3/",
    }


@pytest.fixture(scope="session")
def site(e2e_processes: Processes, localstripe: LocalStripe) -> Iterator[Site]:
    with migrated_database("test_e2e") as dsn, scratch_redis_prefix("te") as prefix:
        settings = load_settings(
            DATABASE_URL=dsn,
            REDIS_URL=TEST_REDIS_URL,
            GATEWAY_SECRET_KEY=TEST_SECRET,
            GATEWAY_REDIS_PREFIX=prefix,
            GATEWAY_ALLOW_PRIVATE_UPSTREAMS=True,
        )
        fake = spawn_fake(e2e_processes, "e2e-fake")
        fake.wait_healthy()
        gateway = GatewayFactory(e2e_processes, settings).start(
            "e2e-gateway", GATEWAY_WORKER_IN_SERVE="0", GATEWAY_LOG_LEVEL="warning", **stripe_env(localstripe)
        )
        localstripe.register_webhook("e2e-gateway", gateway.url + "/api/webhooks/stripe", STRIPE_WEBHOOK_SECRET)
        yield Site(url=gateway.url, settings=settings, fake_upstream_url=fake.base_url)
        e2e_processes.close()


@pytest.fixture(scope="session")
def browser(site: Site) -> Iterator[Browser]:
    """After `site` on purpose: Playwright's sync API keeps an event loop running in this thread, so
    the asyncio set-up of the site's database must be done before it starts."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser, site: Site) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(ACTION_TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def browser_context_b(browser: Browser, site: Site) -> Iterator[Page]:
    """A second, separate browser (its own cookies): another user acting at the same time."""
    ctx = browser.new_context(base_url=site.url)
    ctx.set_default_timeout(ACTION_TIMEOUT_MS)
    try:
        yield ctx.new_page()
    finally:
        ctx.close()
