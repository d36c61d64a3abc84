"""`aichat-gateway serve` processes with a session's settings plus per-gateway overrides."""

from __future__ import annotations

from dataclasses import dataclass, field

from aichat_gateway.config.settings import Settings
from tests.support.ports import free_port
from tests.support.processes import CLI, Proc, Processes, base_env

USAGE_DRAIN_SECONDS = 2.0  # the session gateways' GATEWAY_USAGE_DRAIN_SECONDS


@dataclass
class GatewayFactory:
    """Starts `aichat-gateway serve` processes with the session's settings plus per-gateway overrides."""

    processes: Processes
    settings: Settings
    gateways: list[Proc] = field(default_factory=list)

    def env(self, **overrides: str) -> dict[str, str]:
        s = self.settings
        env = base_env()
        env.update(
            {
                "DATABASE_URL": s.database_url,
                "REDIS_URL": s.redis_url,
                "GATEWAY_SECRET_KEY": s.secret_key.get_secret_value(),
                "GATEWAY_REDIS_PREFIX": s.redis_prefix,
                "GATEWAY_ALLOW_PRIVATE_UPSTREAMS": "1",
                "GATEWAY_LOG_JSON": "1",
                "GATEWAY_LOG_LEVEL": "info",
                # The seeded market lists deliberately broken upstreams; test_proxy_keycheck.py
                # starts a gateway that checks keys.
                "GATEWAY_CHECK_LISTING_KEYS": "0",
                # Deliberately failing listings must keep answering 502 here; the breaker has
                # its own gateway in test_proxy_breaker.py.
                "GATEWAY_BREAKER_FAIL_MAX": "1000000",
                # A buyer who leaves mid-stream: the provider is read on for its usage this long.
                "GATEWAY_USAGE_DRAIN_SECONDS": str(USAGE_DRAIN_SECONDS),
            }
        )
        env.update(overrides)
        return env

    def spawn(self, name: str, **overrides: str) -> Proc:
        port = free_port()
        argv = [CLI, "serve", "--host", "127.0.0.1", "--port", str(port)]
        proc = self.processes.spawn(name, argv, self.env(**overrides), port)
        self.gateways.append(proc)
        return proc

    def start(self, name: str, **overrides: str) -> Proc:
        proc = self.spawn(name, **overrides)
        proc.wait_healthy()
        return proc


@dataclass(frozen=True)
class Gateways:
    a: Proc  # the default gateway; the marketplace is seeded through it
    b: Proc  # a second process on the same Postgres and Redis (revocation across processes)
    strict: Proc  # GATEWAY_MAX_BODY_BYTES=4096 and GATEWAY_UPSTREAM_READ_TIMEOUT=0.5
