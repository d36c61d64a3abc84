"""Loopback ports for the servers and processes the tests start.

`free_port()` asks the kernel for a free port (bind to port 0) and releases it, so that a child
process can bind it a moment later. The kernel picks such a port at random among the free ones,
so a session that starts twenty-odd processes can be handed the same port twice before the first
child has bound it; one child then fails to start and every test on its fixture errors (seen once
in `make test-faults`: 13 errors). So a port is handed out at most once per test process.
Outgoing connections do not take these ports: Linux gives connect() even ports, bind(0) odd ones.
"""

from __future__ import annotations

import socket

# Process-wide on purpose: the ports are a resource of the process, whichever fixture asks.
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on now and that this process has not handed out before."""
    for _ in range(1_000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise AssertionError(f"no fresh loopback port after 1,000 tries ({len(_handed_out)} handed out)")
