"""Helpers the test suites share, one module per concern; tests import them as `tests.support.<module>`.

conftest.py files hold fixtures only: pytest loads every conftest under the one module name
`conftest`, so `from conftest import ...` reached whichever folder's was loaded last and broke when
suites ran together. A helper two suites need lives here, never in a test module or a conftest.

- scratch: throw-away Postgres databases and Redis prefixes, the test settings' constants
- app: services of an in-process app (`replace_services`)
- ports, waiting: fresh loopback ports; polling for what another process does
- processes, fakes, gateways: gateway and fake-upstream subprocesses
- proxy_fixtures: session fixtures shared by tests/integration and tests/faults (their conftests register them)
- market, emails, calls, usage: a marketplace seeded over HTTP, fresh e-mails, calls to a gateway
  (request ids, the OpenAI error shape), its usage events
- faults: tests/faults' buyers, settings and book checks; attack: tests/security's gateway, accounts and
  fake provider
- settlekit, earnings, webhooks, localstripe: money (settlement, seller earnings, signed Stripe
  webhooks, a localstripe process)
- redisbatch, rediskit, tcpproxy, jobkit, ssrf: Redis batches and scripts, a cuttable TCP proxy,
  the job-queue kit, unsafe upstream URLs
"""
