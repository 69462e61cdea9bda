"""The socket rows both readers produce, /proc/PID/net/{tcp,tcp6,unix} (proc(5)) and NETLINK_SOCK_DIAG
(sock_diag(7)), with the kernel's constants they carry, and the per-listener figures made from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# include/net/tcp_states.h
TCP_ESTABLISHED = 0x01
TCP_CLOSE_WAIT = 0x08
TCP_LISTEN = 0x0A
# include/uapi/linux/net.h: the `St` column of /proc/net/unix is a socket_state, not a TCP state.
SS_CONNECTING = 2
SS_CONNECTED = 3
# The `Flags` column carries __SO_ACCEPTCON (include/uapi/linux/net.h) for a socket in listen().
SO_ACCEPTCON = 0x00010000
SOCK_STREAM = 1


@dataclass(frozen=True, slots=True)
class TcpRow:
    """One TCP socket: a line of /proc/net/tcp or /proc/net/tcp6, or an inet_diag message.

    `rx_queue` and `tx_queue` are what proc(5) prints: for a LISTEN socket `rx_queue` is the number of connections
    waiting for accept() (sk_ack_backlog, net/ipv4/tcp_ipv4.c get_tcp4_sock); for a connected socket both are byte
    counts. A LISTEN row's `tx_queue` is 0 in /proc and its capacity in inet_diag (idiag_wqueue =
    sk_max_ack_backlog, net/ipv4/tcp_diag.c). `inode` is 0 for sockets no process holds a file for: connections
    still in an accept queue, request and TIME_WAIT sockets, orphans.
    """

    family: int  # socket.AF_INET (from net/tcp) or socket.AF_INET6 (net/tcp6)
    local_ip: str  # as inet_ntop prints it: '127.0.0.1', '::1', '::ffff:127.0.0.1'
    local_port: int
    state: int  # TCP_* above
    tx_queue: int
    rx_queue: int
    uid: int
    inode: int


@dataclass(frozen=True, slots=True)
class UnixRow:
    """One line of /proc/net/unix (net/unix/af_unix.c unix_seq_show).

    `path` is None for an unbound socket, starts with '@' for an abstract one (the kernel prints its leading NUL, and
    any other NUL, as '@'), and is otherwise the bound path exactly as given to bind(), possibly relative. A server
    socket returned by accept() carries its listener's path; the connecting client does not.
    """

    refcount: int
    flags: int
    type: int  # SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
    state: int  # SS_* socket state, see the constants above
    inode: int
    path: str | None

    @property
    def listening(self) -> bool:
        return bool(self.flags & SO_ACCEPTCON)


@dataclass(frozen=True)
class ListenerStats:
    """The accept queue and accepted connections of one listening address of the application."""

    address: str  # '127.0.0.1:8000', '[::]:8000', 'unix:/run/app.sock'
    kind: str  # 'tcp', 'tcp6' or 'unix', like Gunicorn's `show listeners`
    listen_inodes: tuple[int, ...]  # one per listening socket; several with --reuse-port (one per worker)
    queued: int  # connections the kernel completed that wait for accept(), summed over listen_inodes
    in_flight: int  # accepted connections still open in the application (sync workers: requests being served)
    max_backlog: int | None  # accept-queue capacity summed over listen_inodes; None when not known for all of them
    # The inodes of those accepted connections: joined to a worker's fds, they tell which worker holds one. Left out
    # of comparisons: two reads of the same state agree on the counts, and inodes are a detail of each connection.
    accepted_inodes: frozenset[int] = field(default=frozenset(), compare=False, repr=False)


class SocketTableError(Exception):
    """A socket table could not be read as the kernel writes it: a malformed or oversized /proc table, or a
    sock_diag dump that failed (see netlink.py for its kinds)."""
