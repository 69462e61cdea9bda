"""A control socket planted by another user, for the check's trust tests.

    python planted_socket.py PATH PID UID

Started as root, it becomes UID (group UID, no other groups) before anything else: the test's interpreters live under
/root, where another user could not even start them. It then binds and listens on PATH and answers every
`show stats` with PID, the master it pretends to be, plus a worker target no real master has; it prints one line per
connection (`accepted`) and per request (`request COMMAND`) on stdout, so that the test can tell whether anything
reached it. Standard library only, imported before the privileges are dropped.
"""

import json
import os
import socket
import struct
import sys


def recv_exact(conn, size):
    data = b''
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main():
    path, pid, uid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    print('listening as uid %d' % os.getuid(), flush=True)
    while True:
        conn, _ = listener.accept()
        print('accepted', flush=True)
        with conn:
            conn.settimeout(10)
            try:
                while (header := recv_exact(conn, 4)) is not None:
                    request = json.loads(recv_exact(conn, struct.unpack('>I', header)[0]))
                    print('request %s' % request.get('command'), flush=True)
                    data = {'pid': pid, 'uptime': 1.0, 'workers_target': 999, 'workers_spawned': 0}
                    payload = json.dumps({'id': request['id'], 'status': 'ok', 'data': data}).encode()
                    conn.sendall(struct.pack('>I', len(payload)) + payload)
            except OSError:
                continue


if __name__ == '__main__':
    main()
