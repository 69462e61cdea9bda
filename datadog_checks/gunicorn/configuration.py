"""What the check's configuration means beyond the generated models: where /proc is, the `bind` addresses, and which
sources the metrics `metric_patterns` lets through need.

`config_models/` is generated from `assets/configuration/spec.yaml`; its hand-written `validators.py` parses `bind`
with `parse_bind` below, so that a wrong address is refused when the configuration loads, with the same rules the
socket tables are later compared with.
"""

from __future__ import annotations

import difflib
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

try:
    import datadog_agent
except ImportError:  # outside the Agent (tests, the command-line tools)
    from datadog_checks.base.stubs import datadog_agent

DEFAULT_PROCFS_ROOT = '/proc'
# The oldest datadog-checks-base the check is proven on: Agent 7.51.0's, the first Agent 7 on Python 3.11 (README,
# "Requirements"). base_compat.py holds what differs up to the newest base.
MINIMUM_BASE = '35.0.1'


def procfs_root() -> str:
    """The proc root the Agent is configured with (`procfs_path`, e.g. /host/proc in a container)."""
    return (datadog_agent.get_config('procfs_path') or DEFAULT_PROCFS_ROOT).rstrip('/') or DEFAULT_PROCFS_ROOT


# What a wrong value should look like, for the errors whose wording comes from pydantic rather than a validator.
_EXPECTED = {
    'tags': 'a list of tags, for example `tags: [env:prod, team:web]`',
    'metric_patterns': 'a mapping with `include` and/or `exclude` lists of regular expressions',
    'service': 'a string',
    'min_collection_interval': 'a number of seconds',
    'empty_default_hostname': 'true or false',
    'disable_generic_tags': 'true or false',
    'gunicorn': 'a command, for example /srv/app/venv/bin/gunicorn',
    'control_socket': 'the absolute path of the control socket',
}
_BASE_ERROR = re.compile(r'Detected \d+ errors? while loading configuration model `\w+`:\n')
_PATTERNS_ERROR = re.compile(r'Setting `(include|exclude)` of `metric_patterns` must be an array')


def one_line_error(message: str, options: Mapping[str, Any]) -> str:
    """A configuration error in one line that names each option, what was given and what to write.

    datadog-checks-base words a model's errors as a header then `option` / `  message` line pairs, and refuses a
    `metric_patterns` of the wrong shape with its own sentence; both are rewritten here.
    """
    patterns = _PATTERNS_ERROR.search(message)
    if patterns:
        key = patterns.group(1)
        given = (
            (options.get('metric_patterns') or {}).get(key)
            if isinstance(options.get('metric_patterns'), dict)
            else None
        )
        return (
            'metric_patterns: `%s` must be a list of regular expressions on the full metric name, got %s; write for '
            "example `%s: ['^gunicorn\\.workers$']`" % (key, _shown(given), key)
        )
    if not _BASE_ERROR.match(message):
        return ' '.join(message.split())
    lines = _BASE_ERROR.sub('', message, count=1).split('\n')
    problems = []
    for where, what in zip(lines[::2], lines[1::2], strict=False):
        what = what.strip()
        what = what[len('Value error, ') :] if what.startswith('Value error, ') else what
        option = where.split(' -> ')[0].strip()
        if not option or what.startswith(option):  # a validator's own sentence already names the option
            problems.append(what)
        elif what.startswith("Field '%s' is not allowed from untrusted provider" % option):
            # The base's trusted-provider guard (7.78.0+): the value is fine, its source is not.
            problems.append(
                "%s; set it in the Agent's configuration files (conf.d/gunicorn.d/conf.yaml), a trusted provider"
                % what.rstrip('.')
            )
        elif option in _EXPECTED:
            problems.append('%s must be %s, got %s' % (option, _EXPECTED[option], _shown(options.get(option))))
        else:
            problems.append('%s: %s, got %s' % (where.strip(), what.rstrip('.'), _shown(options.get(option))))
    return '; '.join(' '.join(p.split()) for p in problems)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + '...'


# Read by the Agent itself rather than by the check, so absent from the models (the Agent's check configuration docs).
AGENT_OPTIONS = ('loader', 'name', 'ignore_autodiscovery_tags', 'check_tag_cardinality', 'ha_enabled', 'no_index')


def unknown_options(section: str, options: Iterable[str], known: Iterable[str]) -> list[str]:
    """One warning per option the models do not know, naming the closest known one: the base only logs typos, where
    nobody looks, and the instance otherwise runs as if the option were absent."""
    known = sorted({*known, *AGENT_OPTIONS})
    warnings = []
    for option in options:
        if option in known or not isinstance(option, str):
            continue
        close = difflib.get_close_matches(option, known, n=1, cutoff=0.6)
        hint = 'did you mean `%s`?' % close[0] if close else 'the options are listed in conf.yaml.example'
        warnings.append('unknown option `%s` in %s is ignored: %s' % (option[:100], section, hint))
    return warnings


@dataclass(frozen=True)
class BindAddress:
    """A listener address the application was configured with, canonicalised for exact comparison."""

    family: int  # socket.AF_INET, socket.AF_INET6 or socket.AF_UNIX
    ip: str  # canonical textual IP ('0.0.0.0', '::', '::1'); '' for unix
    port: int  # 0 for unix
    path: str  # '' for TCP

    def __str__(self) -> str:
        if self.family == socket.AF_UNIX:
            return f'unix:{self.path}'
        if self.family == socket.AF_INET6:
            return f'[{self.ip}]:{self.port}'
        return f'{self.ip}:{self.port}'


def parse_bind(text: str) -> BindAddress:
    """A listener address with a literal IP: '127.0.0.1:8000', '[::]:8000', 'tcp://0.0.0.0:80', 'unix:PATH'.

    Also accepts what Gunicorn prints for its listeners (`Listening at:` and the control socket's `show listeners`):
    'http://127.0.0.1:8000', 'https://[::1]:443'. `unix:` and `unix://` prefixes are stripped the way Gunicorn's
    util.parse_address does. Host names and a missing host or port are refused: filling them in would be a guess
    about which address the application bound.
    """
    if text.startswith('unix:'):
        path = text[len('unix:') :]
        path = path[2:] if path.startswith('//') else path
        if not path:
            raise ValueError(f'empty unix socket path in {text!r}')
        return BindAddress(socket.AF_UNIX, '', 0, path)
    scheme, sep, rest = text.partition('://')
    if not sep:
        rest = text
    elif scheme not in ('tcp', 'http', 'https'):
        raise ValueError(f'unsupported scheme in bind address {text!r}')
    host, sep, port_text = rest.rpartition(':')
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f'no port in bind address {text!r}')
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    try:
        # inet_ntop canonicalises exactly as the table parser prints (ipaddress writes v4-mapped addresses
        # differently before Python 3.13).
        ip = socket.inet_ntop(family, socket.inet_pton(family, host))
    except OSError as exc:
        raise ValueError(f'bind address {text!r} is not a literal IP address or unix:PATH') from exc
    return BindAddress(family, ip, int(port_text), '')


# Every metric the check sends, under `gunicorn.`, by the source it needs beyond the process table: a source none of
# whose metrics `metric_patterns` lets through is not read at all (`Reads`).
CONTROL_SOCKET_METRICS = (
    'workers.target',
    'workers.spawned',
    'workers.killed',
    'reloads',
    'worker.heartbeat_age.max',
    'worker.heartbeat_age.avg',
    'workers.near_timeout',
    'worker.timeout',
    'worker.threads',
    'worker.max_requests',
    'dirty_arbiter.up',
    'dirty_worker.heartbeat_age.max',
    'dirty_worker.heartbeat_age.avg',
)
SOCKET_TABLE_METRICS = ('listen.queued', 'listen.backlog_max', 'connections.in_flight')
PSS_METRICS = ('memory.pss', 'memory.pss.max')
RESOURCE_METRICS = (
    'masters',
    'master.uptime',
    'worker.age.min',
    'worker.age.max',
    'workers.restarts',
    'dirty_workers',
    'threads',
    'memory.rss',
    'memory.rss.max',
    *PSS_METRICS,
    'cpu.utilization',
    'cpu.run_queue_wait',
)
# What Datadog's own gunicorn check sends: the one metric this check shares with it.
WORKERS_METRIC = 'workers'
CHECK_METRICS = (WORKERS_METRIC, *RESOURCE_METRICS, *CONTROL_SOCKET_METRICS, *SOCKET_TABLE_METRICS)


@dataclass(frozen=True)
class Reads:
    """Which costly sources a run reads, given what it may send.

    The control socket also names the listeners and the worker class the socket tables are read for; the socket
    tables also complete `gunicorn.workers` for sync workers (a request waiting on I/O counts as working). Without
    them, `gunicorn.workers` is the CPU window's split alone, as Datadog's own check computes it.
    """

    control_socket: bool
    socket_tables: bool
    resources: bool
    pss: bool

    @classmethod
    def of(cls, sends: Callable[[str], bool]) -> Reads:
        """`sends(name)` is AgentCheck.should_send_metric: whether `metric_patterns` lets the full name through."""

        def any_of(names: tuple[str, ...]) -> bool:
            return any(sends('gunicorn.' + name) for name in names)

        tables = any_of(SOCKET_TABLE_METRICS)
        return cls(
            control_socket=tables or any_of(CONTROL_SOCKET_METRICS),
            socket_tables=tables,
            resources=any_of(RESOURCE_METRICS),
            pss=any_of(PSS_METRICS),
        )
