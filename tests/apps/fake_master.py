"""A fake Gunicorn master whose control socket breaks the protocol one chosen way, for the check's hostile-reply tests.

    python fake_master.py NAME PATH SHAPE WHERE

Run with the Gunicorn test virtualenv's python (it has setproctitle). The process titles itself
`gunicorn: master [NAME]`, forks two children titled `gunicorn: worker [NAME]` that only sleep, then serves a control
socket at PATH (4-byte big-endian length, then JSON: the framing of gunicorn/ctl/protocol.py). It is the process that
listens, so SO_PEERCRED names it, and `show stats` carries its own pid: the check accepts it as the master's socket
and reads whatever it sends next. SHAPE is how a reply goes wrong (see SHAPES); WHERE is `stats` (the `show stats`
reply itself, its pid kept where the shape has one) or `rest` (every reply after it). Each connection is served in a
thread of its own so that a connection left open cannot hold up the next one. Only the standard library and
setproctitle: the test kills the whole session when it is done.
"""

import json
import os
import signal
import socket
import struct
import sys
import threading
import time

from setproctitle import setproctitle

STARTED = time.monotonic()
DEEP = 100_000
HUGE = 10**400 - 1  # 400 digits
OVERSIZE = 5 * 1024 * 1024  # beyond the check's 4 MiB cap, within Gunicorn's 16 MiB
SECONDS = frozenset({'uptime', 'last_heartbeat', 'timeout', 'graceful_timeout'})


def normal(command, pid, workers):
    """What Gunicorn 27.0.1 answers (field sets from tests/sources/control_socket/test_integration_client.py)."""
    uptime = time.monotonic() - STARTED + 1.0
    if command == 'show stats':
        return {
            'uptime': uptime,
            'pid': pid,
            'workers_current': 2,
            'workers_target': 2,
            'workers_spawned': 2,
            'workers_killed': 0,
            'reloads': 0,
            'dirty_arbiter_pid': None,
        }
    if command == 'show workers':
        entries = [
            {'pid': w, 'age': i + 1, 'booted': False, 'aborted': False, 'last_heartbeat': 0.25}
            for i, w in enumerate(workers)
        ]
        return {'workers': entries, 'count': len(entries)}
    if command == 'show config':
        return {
            'bind': ['127.0.0.1:1'],
            'workers': 2,
            'worker_class': "<class 'gunicorn.workers.sync.SyncWorker'>",
            'threads': 1,
            'timeout': 30,
            'graceful_timeout': 30,
            'keepalive': 2,
            'max_requests': 0,
            'max_requests_jitter': 0,
            'worker_connections': 1000,
            'preload_app': False,
            'daemon': False,
            'pidfile': None,
            'proc_name': 'fake',
            'reload': False,
            'dirty_workers': 0,
            'dirty_apps': [],
            'control_socket': None,
            'control_socket_disable': False,
        }
    if command == 'show listeners':
        return {'listeners': [{'address': 'http://127.0.0.1:1', 'fd': 3, 'type': 'tcp'}], 'count': 1}
    return {}


def frame(payload):
    return struct.pack('>I', len(payload)) + payload


def ok(request_id, data):
    return frame(json.dumps({'id': request_id, 'status': 'ok', 'data': data}).encode())


def _each_number(data, replace, key=None):
    """`data` with every number (bool aside) replaced by `replace(key, value)`, except the pid of a stats reply."""
    if isinstance(data, dict):
        stats = 'uptime' in data
        return {k: v if k == 'pid' and stats else _each_number(v, replace, k) for k, v in data.items()}
    if isinstance(data, list):
        return [_each_number(v, replace, key) for v in data]
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return replace(key, data)
    return data


def nested(request_id, data):
    return frame(b'{"id":%d,"status":"ok","data":%s%s}' % (request_id, b'[' * DEEP, b']' * DEEP))


def huge_int(request_id, data):
    # Every count and age 400 digits long, and the pids of workers too (a stats reply keeps its own).
    return ok(request_id, _each_number(data, lambda key, value: HUGE))


def long_int(request_id, data):
    # Past Python's 4,300-digit limit for int(str): json.loads raises a plain ValueError, not a JSONDecodeError.
    pid = b',"pid":%d' % data['pid'] if 'uptime' in data else b''
    return frame(b'{"id":%d,"status":"ok","data":{"workers_target":%s%s}}' % (request_id, b'9' * 5000, pid))


def not_a_number(request_id, data):
    # Python's json writes NaN, Infinity and -Infinity, which its reader (and so the check's) accepts.
    values = iter([float('nan'), float('inf'), float('-inf')] * 1000)
    return ok(request_id, _each_number(data, lambda key, value: next(values) if key in SECONDS else value))


def strings(request_id, data):
    return ok(request_id, _each_number(data, lambda key, value: str(value)))


def data_list(request_id, data):
    return ok(request_id, [data])


def missing(request_id, data):
    return ok(request_id, {'pid': data['pid']} if 'uptime' in data else {})


def unknown(request_id, data):
    extra = {'evil': {'nested': [1, 2, {'x': None}]}, 'workers_target_v2': 999, 'pid_namespace': 'x' * 10_000}
    if isinstance(data.get('workers'), list):
        data = {**data, 'workers': [{**w, 'cpu': 'lots', 'requests': -1} for w in data['workers']]}
    return ok(request_id, {**data, **extra})


def oversize(request_id, data):
    payload = b'{"id":%d,"status":"ok","data":{"pad":"%s"}}' % (request_id, b'x' * OVERSIZE)
    return frame(payload)


def wrong_id(request_id, data):
    return ok(request_id + 1000, data)


def closes_mid_frame(request_id, data):
    whole = ok(request_id, data)
    return whole[: len(whole) // 2]  # then the stream is ended (serve)


SHAPES = {
    'nested': nested,
    'huge_int': huge_int,
    'long_int': long_int,
    'nan': not_a_number,
    'strings': strings,
    'data_list': data_list,
    'missing': missing,
    'unknown': unknown,
    'oversize': oversize,
    'wrong_id': wrong_id,
    'mid_frame': closes_mid_frame,
    'mid_frame_reset': closes_mid_frame,
}


def recv_exact(conn, size):
    data = b''
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve(conn, shape, where, workers):
    pid = os.getpid()
    with conn:
        conn.settimeout(10)
        try:
            while (header := recv_exact(conn, 4)) is not None:
                request = json.loads(recv_exact(conn, struct.unpack('>I', header)[0]))
                command = request.get('command')
                data = normal(command, pid, workers)
                hostile = (where == 'stats') == (command == 'show stats')
                conn.sendall(SHAPES[shape](request['id'], data) if hostile else ok(request['id'], data))
                if hostile and shape == 'mid_frame':
                    # An orderly end of the stream: the client reads what was sent, then end of file.
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(65536):
                        pass
                    return
                if hostile and shape == 'mid_frame_reset':
                    return  # closed with the pipelined requests unread: the client's next read is reset
        except OSError:
            return  # the check hung up: it read what it wanted


def main():
    name, path, shape, where = sys.argv[1:5]
    assert shape in SHAPES and where in ('stats', 'rest'), sys.argv
    setproctitle('gunicorn: master [%s]' % name)
    workers = []
    titled, told = os.pipe()
    for _ in range(2):
        child = os.fork()
        if child == 0:
            setproctitle('gunicorn: worker [%s]' % name)
            os.write(told, b'.')
            while True:
                signal.pause()
        workers.append(child)
    ready = b''
    while len(ready) < 2:  # both children are titled: from now on the master shows two workers
        ready += os.read(titled, 2 - len(ready))
    # Bound and listened to by this process after the fork: SO_PEERCRED names the master.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    print('ready %d' % os.getpid(), flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, shape, where, workers), daemon=True).start()


if __name__ == '__main__':
    main()
