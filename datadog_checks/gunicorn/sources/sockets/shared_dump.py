"""inet_diag TCP dumps (sock_diag(7)) bounded by one deadline, and one such dump per family per run shared by every
master in the Agent's network namespace.

A dump costs about the same whatever its port filter: the kernel walks its whole established hash for each one
(inet_diag_dump_icsk), about 1.5 ms of CPU right after the check's sleep on a host with 262,144 buckets. A node-wide
instance whose apps each dumped their own ports paid that once per app. When the run first tells `SharedTcpDump`
every port its masters will ask about (`want`), one dump per family filtered by their union serves them all, and
each master takes back exactly the rows its own dump would have returned (`rows`). The filter stays, so the cost
grows with Gunicorn's sockets, not with the host's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from . import netlink
from .rows import TcpRow

# One deadline for the netlink dumps of a run; an answer is normally back in well under a millisecond.
DIAG_TIMEOUT_SECONDS = 0.5


def dump_tcp(
    tcp_sockets: Callable[..., list[TcpRow]],
    session: netlink.Session | None,
    ports_by_family: Mapping[int, Collection[int]],
) -> list[TcpRow]:
    """The TCP sockets of each family whose local port is one of that family's ports, within DIAG_TIMEOUT_SECONDS.

    Raises netlink.SockDiagError (SockDiagTimeout past the deadline). More ports than one filter program holds are
    asked for in several dumps: a socket has one local port, so no row comes back twice.
    """
    deadline = time.monotonic() + DIAG_TIMEOUT_SECONDS
    rows: list[TcpRow] = []
    for family in sorted(ports_by_family):
        ports = sorted(ports_by_family[family])
        for start in range(0, len(ports), netlink.MAX_FILTER_PORTS):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise netlink.SockDiagTimeout('inet_diag dumps not finished after %.1fs' % DIAG_TIMEOUT_SECONDS)
            chunk = ports[start : start + netlink.MAX_FILTER_PORTS]
            rows += tcp_sockets(family, chunk, timeout_s=remaining, session=session)
    return rows


@dataclass
class SharedTcpDump:
    """One run's inet_diag TCP dump, shared by the socket tables of several apps (see tables.SocketTables.expect).

    Held across runs for its netlink session, which every app's tables use for their dumps too; `start_run` forgets
    the previous run's ports and rows. The dump happens at the first `rows` of a run, so a failure (a timeout, a
    kernel without inet_diag) is met once and given to every master that asks: each falls back as it would after a
    failed dump of its own, and the run waits for one deadline, not one per app.
    """

    tcp_sockets: Callable[..., list[TcpRow]] = netlink.tcp_sockets
    # close() (the check's cancel()) closes it for good: a cancelled check that runs anyway opens a socket per dump.
    session: netlink.Session | None = field(default_factory=netlink.Session)
    _wanted: dict[int, set[int]] = field(default_factory=dict)
    _rows: list[TcpRow] | None = None
    _failure: netlink.SockDiagError | None = None

    def start_run(self) -> None:
        self._wanted = {}
        self._rows = None
        self._failure = None

    def want(self, families: Collection[int], ports: Collection[int]) -> None:
        """A master will ask for these families and ports this run. Once the run's dump is made it is too late:
        `covers` then says no, and that master dumps its own."""
        if self._dumped:
            return
        for family in families:
            self._wanted.setdefault(family, set()).update(ports)

    def covers(self, families: Collection[int], ports: Collection[int]) -> bool:
        return all(self._wanted.get(family, set()).issuperset(ports) for family in families)

    def rows(self, families: Collection[int], ports: Collection[int]) -> list[TcpRow]:
        """This run's rows of `families` with a local port in `ports`, which `covers`; raises the run's dump error."""
        if not self._dumped:
            try:
                self._rows = dump_tcp(self.tcp_sockets, self.session, self._wanted)
            except netlink.SockDiagError as exc:
                self._failure = exc
        if self._failure is not None:
            raise self._failure
        return [r for r in self._rows or () if r.family in families and r.local_port in ports]

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    @property
    def _dumped(self) -> bool:
        return self._rows is not None or self._failure is not None
