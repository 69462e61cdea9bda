"""Raw Gunicorn command lines (what /proc/PID/cmdline holds when no process title is set) and their redaction.

Without setproctitle, and while a master is still importing the application, a Gunicorn process shows the command
that started it: `/venv/bin/python3 /venv/bin/gunicorn -w 4 -n web app:app`, `python -m gunicorn app:app`. Master and
workers show the same line. `parse_gunicorn` reads it the way Gunicorn's own argparse parser does (gunicorn/config.py
`Config.parser()`: one positional `args`, long options abbreviable, `--opt=value`, `-nvalue`, `-n=value`), so that the
name Gunicorn would have put in the title can be compared with `proc_name`.

Command lines carry secrets (`-e DATABASE_URL=postgres://user:pass@db/app`, `--password=...`): everything that shows
one to a person goes through redaction.py first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .redaction import app_name

PROGRAMS = frozenset({'gunicorn', 'gunicorn3'})  # gunicorn3: Debian's python3-gunicorn before bookworm
MODULES = frozenset({'gunicorn', 'gunicorn.app.wsgiapp'})
_INTERPRETER = re.compile(r'(?:python|pypy)[0-9.]*\Z')
# Interpreter options that take a separate value (python(1)); the others are single flags.
_INTERPRETER_VALUE_OPTIONS = frozenset({'-X', '-W', '--check-hash-based-pycs'})

# Options of Gunicorn 20.1 to 27.0 that take no value (read from gunicorn.config.KNOWN_SETTINGS: actions store_true,
# store_false, store_const). Every other option takes exactly one value, except `--proxy-protocol`.
FLAGS = frozenset(
    {
        '--capture-output',
        '--casefold-http-method',
        '--check-config',
        '--daemon',
        '--disable-redirect-access-to-syslog',
        '--do-handshake-on-connect',
        '--enable-backlog-metric',
        '--enable-stdio-inheritance',
        '--initgroups',
        '--log-syslog',
        '--no-control-socket',
        '--no-sendfile',
        '--permit-obsolete-folding',
        '--permit-unconventional-http-method',
        '--permit-unconventional-http-version',
        '--preload',
        '--print-config',
        '--reload',
        '--reuse-port',
        '--spew',
        '--strip-header-spaces',
        '--suppress-ragged-eofs',
        '--help',
        '--version',
        '-D',
        '-R',
        '-h',
        '-v',
    }
)
# 20.1 made `--proxy-protocol` a flag; 27.0 gives it an optional MODE (nargs='?'). A following word is its value only
# when it is one of the modes Gunicorn accepts (config.py validate_proxy_protocol), otherwise parsing would have failed.
OPTIONAL_VALUE = {'--proxy-protocol': frozenset({'off', 'false', '0', 'none', 'true', 'auto', '1', 'v1', 'v2'})}
VALUE_OPTIONS = frozenset(
    {
        '--access-logfile',
        '--access-logformat',
        '--asgi-disconnect-grace-period',
        '--asgi-lifespan',
        '--asgi-loop',
        '--backlog',
        '--bind',
        '--ca-certs',
        '--cert-reqs',
        '--certfile',
        '--chdir',
        '--ciphers',
        '--config',
        '--control-socket',
        '--control-socket-mode',
        '--dirty-app',
        '--dirty-graceful-timeout',
        '--dirty-threads',
        '--dirty-timeout',
        '--dirty-workers',
        '--dogstatsd-tags',
        '--env',
        '--error-logfile',
        '--forwarded-allow-ips',
        '--forwarder-headers',
        '--graceful-timeout',
        '--group',
        '--header-map',
        '--http-parser',
        '--http-protocols',
        '--http2-cleartext',
        '--http2-initial-window-size',
        '--http2-max-concurrent-streams',
        '--http2-max-frame-size',
        '--http2-max-header-list-size',
        '--keep-alive',
        '--keyfile',
        '--limit-request-field_size',
        '--limit-request-fields',
        '--limit-request-line',
        '--log-config',
        '--log-config-json',
        '--log-file',
        '--log-level',
        '--log-syslog-facility',
        '--log-syslog-prefix',
        '--log-syslog-to',
        '--logger-class',
        '--max-requests',
        '--max-requests-jitter',
        '--name',
        '--paste',
        '--paste-global',
        '--paster',
        '--pid',
        '--protocol',
        '--proxy-allow-from',
        '--pythonpath',
        '--reload-engine',
        '--reload-extra-file',
        '--root-path',
        '--ssl-version',
        '--statsd-host',
        '--statsd-prefix',
        '--threads',
        '--timeout',
        '--umask',
        '--user',
        '--uwsgi-allow-from',
        '--websocket-max-message-size',
        '--worker-class',
        '--worker-connections',
        '--worker-tmp-dir',
        '--workers',
    }
)
# Short options that take a value, and the long option each stands for.
SHORT_VALUE = {
    '-b': '--bind',
    '-c': '--config',
    '-e': '--env',
    '-g': '--group',
    '-k': '--worker-class',
    '-m': '--umask',
    '-n': '--name',
    '-p': '--pid',
    '-t': '--timeout',
    '-u': '--user',
    '-w': '--workers',
}
SHORT_FLAGS = {'-D': '--daemon', '-R': '--enable-stdio-inheritance', '-h': '--help', '-v': '--version'}
_LONG = tuple(sorted(FLAGS | VALUE_OPTIONS | set(OPTIONAL_VALUE)))


@dataclass(frozen=True)
class GunicornCommand:
    """A Gunicorn command line, read as Gunicorn reads it.

    `args` is what follows the program (`gunicorn`, or `python -m gunicorn`); two processes with equal `args` run
    the same server (a forked worker, or a master re-executed by USR2 through `sys.executable`, which may differ
    from the interpreter the shebang named).
    """

    argv: tuple[str, ...]
    args: tuple[str, ...]
    options: dict[str, tuple[str | None, ...]] = field(default_factory=dict, compare=False, hash=False)
    positional: tuple[str, ...] = ()

    def last(self, option: str) -> str | None:
        """The value Gunicorn uses: argparse keeps the last occurrence of an option."""
        values = self.options.get(option)
        return values[-1] if values else None

    def has(self, option: str) -> bool:
        return option in self.options

    @property
    def name(self) -> str | None:
        """`--name`/`-n`, when the command line sets it; a factory call without its arguments, as in titles."""
        return app_name(self.last('--name') or None)

    @property
    def app(self) -> str | None:
        """The application: the positional APP_MODULE, else the `--paste` file; a factory call without its arguments."""
        return app_name(
            (self.positional[0] if self.positional else None) or self.last('--paste') or self.last('--paster')
        )

    @property
    def proc_name(self) -> str:
        """The name Gunicorn puts in its titles (gunicorn/config.py ProcName, app/wsgiapp.py default_proc_name).

        A `proc_name` set in a configuration file or in GUNICORN_CMD_ARGS is not on the command line: then the
        name shown here is the one Gunicorn would use without it.
        """
        return self.name or self.app or 'gunicorn'

    @property
    def pid_file(self) -> str | None:
        return self.last('--pid')

    @property
    def worker_class(self) -> str | None:
        """The worker class as configured on the command line, or None when it is not there (the default is sync)."""
        worker_class = self.last('--worker-class')
        if worker_class is None:
            return None
        # `-k gthread`, `-k gunicorn.workers.ggevent.GeventWorker`, `-k uvicorn.workers.UvicornWorker`
        return worker_class

    @property
    def threads(self) -> int | None:
        try:
            return int(self.last('--threads') or '')
        except ValueError:
            return None

    @property
    def declares_dirty_apps(self) -> bool:
        return self.has('--dirty-app')


def entry_index(argv: Sequence[str]) -> int | None:
    """Where Gunicorn's own arguments start in `argv`, or None when `argv` does not run Gunicorn."""
    if not argv:
        return None
    program = _basename(argv[0])
    if program in PROGRAMS:
        return 1
    if not _INTERPRETER.match(program):
        return None
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == '-m' or (arg.startswith('-m') and not arg.startswith('--')):
            module = arg[2:] or (argv[i + 1] if i + 1 < len(argv) else '')
            return (i + (1 if arg[2:] else 2)) if module in MODULES else None
        if arg.startswith('-c'):
            return None  # `python -c CODE`: whatever it runs, it is not the gunicorn entry point
        if arg in _INTERPRETER_VALUE_OPTIONS:
            i += 2
            continue
        if arg.startswith('-') and arg != '-':
            i += 1
            continue
        return i + 1 if _basename(arg) in PROGRAMS else None
    return None


def parse_gunicorn(argv: Sequence[str]) -> GunicornCommand | None:
    """The Gunicorn command in a raw command line, or None when the process does not run Gunicorn."""
    start = entry_index(argv)
    if start is None:
        return None
    args = tuple(argv[start:])
    options: dict[str, list[str | None]] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == '--':
            positional.extend(args[i:])
            break
        if arg.startswith('--'):
            option, eq, value = arg.partition('=')
            option = _expand_abbreviation(option)
            if eq:
                options.setdefault(option, []).append(value)
            elif option in FLAGS:
                options.setdefault(option, []).append(None)
            elif option in OPTIONAL_VALUE:
                if i < len(args) and args[i].lower() in OPTIONAL_VALUE[option]:
                    options.setdefault(option, []).append(args[i])
                    i += 1
                else:
                    options.setdefault(option, []).append(None)
            else:
                options.setdefault(option, []).append(args[i] if i < len(args) else None)
                i += 1
        elif arg.startswith('-') and len(arg) > 1:
            short = arg[:2]
            if short in SHORT_VALUE:
                attached = arg[2:]
                if attached.startswith('='):
                    attached = attached[1:]
                if attached:
                    value = attached
                else:
                    value = args[i] if i < len(args) else None
                    i += 1
                options.setdefault(SHORT_VALUE[short], []).append(value)
            else:
                # argparse accepts bundled flags (`-DR`); an unknown short option is kept as a flag.
                for letter in arg[1:]:
                    flag = '-' + letter
                    options.setdefault(SHORT_FLAGS.get(flag, flag), []).append(None)
        else:
            positional.append(arg)
    return GunicornCommand(
        argv=tuple(argv),
        args=args,
        options={k: tuple(v) for k, v in options.items()},
        positional=tuple(positional),
    )


def _expand_abbreviation(option: str) -> str:
    """argparse accepts any unique prefix of a long option (`--na web` is `--name web`)."""
    if option in FLAGS or option in VALUE_OPTIONS or option in OPTIONAL_VALUE:
        return option
    matches = [o for o in _LONG if o.startswith(option)]
    return matches[0] if len(matches) == 1 else option


def _basename(path: str) -> str:
    return path.rstrip('/').rsplit('/', 1)[-1]
