"""Shared pytest setup: tests never reach the network (loopback and Unix sockets stay allowed)."""

from __future__ import annotations

import socket

import pytest

_LOCAL = ("127.", "::1", "localhost", "0.0.0.0")


def _guard(original):
    def connect(self, address, *args, **kwargs):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and not str(host).startswith(_LOCAL):
            raise RuntimeError(f"network access is disabled in tests (tried to connect to {address!r})")
        return original(self, address, *args, **kwargs)

    return connect


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guard(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guard(socket.socket.connect_ex))
    yield
