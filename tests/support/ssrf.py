"""Upstream URLs a listing must never get (checked when listed): shared by the SSRF tests of the
integration and attack suites."""

from __future__ import annotations

UNSAFE = [
    "http://api.openai.com/v1",  # plain http
    "https://127.0.0.1/v1",  # loopback
    "https://10.0.0.5/v1",  # private ranges
    "https://172.16.0.1/v1",
    "https://192.168.1.1/v1",
    "https://100.64.0.1/v1",  # carrier-grade NAT
    "https://0.0.0.0/v1",
    "https://169.254.169.254/latest/meta-data",  # the cloud metadata address (link-local)
    "https://[::1]/v1",  # IPv6 loopback
    "https://[fd00::1]/v1",  # IPv6 unique-local
    "https://[fe80::1]/v1",  # IPv6 link-local
    "https://[::ffff:10.0.0.1]/v1",  # IPv4-mapped private
    "https://localhost/v1",  # a name that resolves to a private address
]
