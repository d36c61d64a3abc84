"""tests/support/ports.py: the ports handed to test servers never repeat within a process.

The kernel's bind(0) repeats a released port often enough (2-12 times in 500 picks here) that
two processes started side by side could be given one port.
"""

from __future__ import annotations

import socket

from tests.support.ports import free_port


def test_free_port_never_hands_out_the_same_port_twice() -> None:
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)


def test_a_port_from_free_port_can_be_bound_and_listened_on() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
