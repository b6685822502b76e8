"""Test-wide settings: the tiny `ci` profile, the CPU, a non-interactive matplotlib backend, no network."""

import os

os.environ.setdefault("MINILDM_PROFILE", "ci")
os.environ.setdefault("MINILDM_DEVICE", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")

import socket  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any attempt to open a network connection in a test fails loudly."""

    def guard(*args, **kwargs):
        raise RuntimeError("tests must not use the network")

    monkeypatch.setattr(socket, "create_connection", guard)
    monkeypatch.setattr(socket.socket, "connect", guard)
