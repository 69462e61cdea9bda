"""Fixtures of the control-socket tests: a short socket directory, fault servers, a bare listener."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator

import pytest

from .fakes import FaultServer


@pytest.fixture
def sock_dir() -> Iterator[str]:
    # Not pytest's tmp_path: its long names can pass the 107-byte sun_path limit, which has a test of its own.
    path = tempfile.mkdtemp(prefix='ctl-')
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def serve(sock_dir) -> Iterator[Callable[..., FaultServer]]:
    servers: list[FaultServer] = []

    def start(handler: Callable[[socket.socket, FaultServer], None], name: str = 'gunicorn.ctl', **kw) -> FaultServer:
        server = FaultServer(os.path.join(sock_dir, name), handler, **kw)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def listener(sock_dir) -> Iterator[tuple[socket.socket, str]]:
    path = os.path.join(sock_dir, 'gunicorn.ctl')
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
        sock.listen(1)
        yield sock, path
