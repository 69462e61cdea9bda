"""A writable proc tree in a temporary directory, for races and rare states a real system will not produce on cue.

Files follow proc(5) byte for byte (stat with its comm in parentheses, NUL-separated cmdline, per-thread children),
so the readers under test cannot tell them from the kernel's.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

TCP_HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n'
TCP_TAIL = '1 0000000000000000 100 0 0 10 0'
UNIX_HEADER = 'Num       RefCount Protocol Flags    Type St Inode Path\n'


def _hex_address(ip: str, port: int) -> str:
    # proc(5): 32-bit words printed in host byte order.
    family = socket.AF_INET6 if ':' in ip else socket.AF_INET
    raw = socket.inet_pton(family, ip)
    words = ''.join('%08X' % int.from_bytes(raw[i : i + 4], sys.byteorder) for i in range(0, len(raw), 4))
    return '%s:%04X' % (words, port)


class FakeProc:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def add(
        self,
        pid: int,
        ppid: int,
        title: str | list[str],
        *,
        comm: str | None = None,
        state: str = 'S',
        start: int = 1000,
        cpu_ns: int = 0,
        ticks: int = 0,
        threads: int = 1,
        children: tuple[int, ...] = (),
        nul_padding: int = 16,
    ) -> FakeProc:
        d = self.root / str(pid)
        d.mkdir(parents=True, exist_ok=True)
        argv = [title] if isinstance(title, str) else title
        cmdline = '\0'.join(argv).encode() + b'\0' * nul_padding if argv else b''
        (d / 'cmdline').write_bytes(cmdline)
        comm = comm if comm is not None else (argv[0][:15] if argv else 'kthread')
        (d / 'comm').write_text(comm + '\n')
        self.set_stat(pid, ppid=ppid, comm=comm, state=state, start=start, ticks=ticks, threads=threads)
        tids = [pid] + [pid * 100 + i for i in range(1, threads)]
        for tid in tids:
            (d / 'task' / str(tid)).mkdir(parents=True, exist_ok=True)
            (d / 'task' / str(tid) / 'children').write_text('')
            self.set_thread_cpu(pid, tid, 0)
        self.set_cpu(pid, cpu_ns)
        self.set_children(pid, children)
        self.set_status(pid, os.geteuid())
        return self

    def set_status(self, pid: int, uid: int, ns_pids: tuple[int, ...] = ()) -> None:
        """/proc/PID/status: its effective uid, and NSpid (this namespace's pid first, the process's own last)."""
        lines = ['Name:\tfake\n', 'Uid:\t%d\t%d\t%d\t%d\n' % ((uid,) * 4)]
        lines.append('NSpid:\t%s\n' % '\t'.join(str(p) for p in (pid, *ns_pids)))
        (self.root / str(pid) / 'status').write_text(''.join(lines))

    def set_environ(self, pid: int, **variables: str) -> None:
        (self.root / str(pid) / 'environ').write_bytes(
            b''.join(b'%s=%s\0' % (k.encode(), v.encode()) for k, v in variables.items())
        )

    def set_cwd(self, pid: int, path: str) -> None:
        link = self.root / str(pid) / 'cwd'
        link.unlink(missing_ok=True)
        link.symlink_to(path)

    def set_stat(self, pid, *, ppid, comm, state='S', start=1000, ticks=0, threads=1, rss_pages=2500):
        # proc(5) fields 1..52; utime=14, stime=15, num_threads=20, starttime=22, rss=24.
        fields = ['0'] * 52
        fields[0], fields[1], fields[2], fields[3] = str(pid), '(%s)' % comm, state, str(ppid)
        fields[13], fields[14] = str(ticks), '0'
        fields[19], fields[21], fields[23] = str(threads), str(start), str(rss_pages)
        (self.root / str(pid) / 'stat').write_text(' '.join(fields) + '\n')

    def set_cpu(self, pid: int, cpu_ns: int) -> None:
        # /proc/PID/schedstat is the main thread's, the same as /proc/PID/task/PID/schedstat.
        (self.root / str(pid) / 'schedstat').write_text('%d 0 1\n' % cpu_ns)
        if (self.root / str(pid) / 'task' / str(pid)).is_dir():
            self.set_thread_cpu(pid, pid, cpu_ns)

    def set_thread_cpu(self, pid: int, tid: int, cpu_ns: int) -> None:
        (self.root / str(pid) / 'task' / str(tid) / 'schedstat').write_text('%d 0 1\n' % cpu_ns)

    def set_fds(self, pid: int, *targets: str) -> None:
        """Open files of `pid`, as the symlinks of /proc/PID/fd show them (`socket:[N]`, `anon_inode:[eventpoll]`)."""
        fd_dir = self.root / str(pid) / 'fd'
        shutil.rmtree(fd_dir, ignore_errors=True)
        fd_dir.mkdir(parents=True)
        for fd, target in enumerate(targets):
            (fd_dir / str(fd)).symlink_to(target)

    def set_net(self, pid: int, tcp=(), tcp6=(), unix=()) -> None:
        """Socket tables of `pid`'s network namespace, in the kernel's format.

        tcp/tcp6 rows: (local_ip, local_port, remote_ip, remote_port, state, rx_queue, inode), state as an int (0x0A
        LISTEN, 0x01 ESTABLISHED); unix rows: (listening, state, inode, path or None).
        """
        net = self.root / str(pid) / 'net'
        net.mkdir(parents=True, exist_ok=True)
        for name, rows in (('tcp', tcp), ('tcp6', tcp6)):
            lines = [TCP_HEADER]
            for n, (lip, lport, rip, rport, state, rx, inode) in enumerate(rows):
                lines.append(
                    '%4d: %s %s %02X 00000000:%08X 00:00000000 00000000     0        0 %d %s\n'
                    % (n, _hex_address(lip, lport), _hex_address(rip, rport), state, rx, inode, TCP_TAIL)
                )
            (net / name).write_text(''.join(lines))
        lines = [UNIX_HEADER]
        for listening, state, inode, path in unix:
            flags = 0x00010000 if listening else 0
            lines.append(
                '0000000000000000: 00000002 00000000 %08X 0001 %02X %5d%s\n'
                % (flags, state, inode, '' if path is None else ' ' + path)
            )
        (net / 'unix').write_text(''.join(lines))

    def set_children(self, pid: int, children, tid: int | None = None) -> None:
        tid = pid if tid is None else tid
        (self.root / str(pid) / 'task' / str(tid) / 'children').write_text(''.join('%d ' % c for c in children))

    def remove(self, pid: int) -> None:
        shutil.rmtree(self.root / str(pid), ignore_errors=True)
