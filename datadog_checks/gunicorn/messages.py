"""The words the check sends: service-check messages and warnings, shown in the Agent's status and in Datadog.

Built from what the check's own run saw (no extra reads here). `diagnose` prints the long form of the same facts.
Names come from the host, so each is cut to NAME_CHARS and every message to MESSAGE_CHARS: a 10,000-character
proc_name must not make a 50,000-character service check. Names are already redacted where they are read
(sources/redaction.py).
"""

from __future__ import annotations

import difflib
import re

from .collectors.discovery import AppTree, Sightings
from .sources.control_socket.client import ControlSocketError, ProtocolError
from .sources.control_socket.locate import ForeignOwner, ListenerWithoutFile, NotASocket, Unverified, WrongMaster
from .sources.pidfile import PidFileError
from .sources.redaction import clip

NAME_CHARS = 100
MESSAGE_CHARS = 2000

SETPROCTITLE_HINT = (
    "Process titles need `setproctitle` in the application's Python environment (pip install setproctitle, then "
    'restart Gunicorn)'
)
MAX_NAMES = 5


def explain_missing(
    app: str | None,
    sightings: Sightings | None,
    pid_file: str | None = None,
    pid_file_problem: PidFileError | None = None,
    hidepid: str | None = None,
) -> str:
    """Why no master was found, in a few sentences, and what to change."""
    app = _name(app)
    parts = []
    if pid_file_problem is not None:
        problem = str(pid_file_problem).rstrip('.')
        parts.append(
            'No Gunicorn master found through pid_file: %s%s' % (problem, '' if problem.endswith('?') else '.')
        )
    if app is not None:
        parts.append(
            'No gunicorn process with name %s found, skipping worker metrics: no process is titled '
            '`gunicorn: master [%s]` and no Gunicorn command line has `--name %s` or the application %s.'
            % (app, app, app, app)
        )
        if sightings is not None:
            parts += what_was_seen(app, sightings, hidepid)
        parts.append('%s.' % SETPROCTITLE_HINT)
    command = 'python -m datadog_checks.gunicorn diagnose'
    if app is not None:
        command += ' --proc-name %s' % _quote(app)
    if pid_file is not None:
        command += ' --pid-file %s' % _quote(pid_file)
    parts.append('Run `%s` as the Agent user for details.' % command)
    return bounded(' '.join(parts))


def titles_missing_message(app: str | None, trees: list[AppTree]) -> str:
    return bounded(
        'Gunicorn master %s of %s runs without process titles: the check found it from its command line. Install '
        "setproctitle in the application's Python environment (pip install setproctitle, then restart Gunicorn) to "
        'make discovery cheaper and exact.' % (_pids(trees), _name(app))
    )


def apps_left_out_message(left_out: list[str], max_apps: int) -> str:
    shown = ', '.join(_name(app) or '' for app in left_out[:MAX_NAMES])
    more = ' and %d more' % (len(left_out) - MAX_NAMES) if len(left_out) > MAX_NAMES else ''
    return bounded(
        '%d Gunicorn application(s) found on this host are not reported, past app_autodiscovery.max_apps (%d): '
        '%s%s. Raise max_apps, or leave applications out with app_autodiscovery.exclude.'
        % (len(left_out), max_apps, shown, more)
    )


def process_table_unreadable_message(seen: Sightings) -> str:
    return bounded(
        "Cannot list the processes under %s, so no Gunicorn application can be found: check the Agent's "
        'procfs_path.' % seen.unreadable_root
    )


def no_workers_message(app: str | None, trees: list[AppTree]) -> str:
    masters = _pids(trees)
    if all(t.starting for t in trees):
        return bounded(
            '0 working and 0 idle workers for %s: master %s is still starting (it shows its command line and has '
            'no workers yet, as while `--preload` imports the application)' % (_name(app), masters)
        )
    return bounded('0 working and 0 idle workers for %s: master %s has no workers' % (_name(app), masters))


_TITLE = re.compile(r'^\s*gunicorn:\s*master\s*\[(.*)\]\s*$')


def closest_names(wanted: str, names: list[str]) -> list[str]:
    """The names a user most likely meant: the inside of a whole title pasted as the name, an application module
    given without its `:callable` (`web3` for `web3:application`), then names spelled alike."""
    title = _TITLE.match(wanted)
    if title and title.group(1) in names:
        return [title.group(1)]
    module = [n for n in names if n.split(':', 1)[0] == wanted]
    return module[:3] or difflib.get_close_matches(wanted, names, n=3, cutoff=0.6)


def what_was_seen(app: str | None, seen: Sightings, hidepid: str | None) -> list[str]:
    if seen.unreadable_root:
        return [
            "The process table cannot be listed (%s): set the Agent's procfs_path to where the host's /proc is "
            "mounted; the check reads Linux's /proc and does not run on macOS." % seen.unreadable_root
        ]
    parts = []
    names = sorted(set(seen.titled) | set(seen.untitled))
    if names:
        close = closest_names(app or '', names)
        listed = close or names[:MAX_NAMES]
        described = ', '.join('`%s`%s' % (_name(n), '' if n in seen.titled else ' (no title)') for n in listed)
        if close:
            parts.append('Did you mean %s?' % described)
        else:
            more = len(names) - len(listed)
            parts.append('Gunicorn masters seen: %s%s.' % (described, ' and %d more' % more if more > 0 else ''))
    else:
        parts.append(
            'No Gunicorn master is visible to the Agent at all: is the application running on this host, and when the '
            "Agent runs in a container, does it share the host's PID namespace with the host's /proc mounted at its "
            'procfs_path?'
        )
    if seen.untitled:
        parts.append(
            'Masters without titles are named by the `--name` or the application module of their command line (a '
            '`proc_name` set in a Gunicorn configuration file is not visible there: use that module, or pid_file).'
        )
    if hidepid:
        parts.append("/proc is mounted with %s: other users' processes are hidden from the Agent." % hidepid)
    elif seen.denied:
        parts.append('%d processes could not be read by the Agent user.' % seen.denied)
    return parts


def _quote(text: str) -> str:
    return "'%s'" % text.replace("'", "'\\''") if any(c in text for c in ' \'"[]:;&|$`') else text


# The control socket

_OWN_SOCKET_FIX = 'start each %s with its own --control-socket'


def control_socket_problem(
    error: ControlSocketError, tree: AppTree, trees: list[AppTree], configured: bool
) -> str | None:
    """What to tell the user when a master's control socket could not be used; None when it is not worth a warning.

    A socket found where Gunicorn puts it by default may simply not be readable by the Agent (0600 in a 0700
    directory) or not exist (Gunicorn before 25.1): that costs the optional metrics and is said in the debug log and
    by diagnose. What the user asked for (`control_socket`), a socket someone else answers on or owns, and a reply
    that breaks the protocol are told.
    """
    telling = error.telling if isinstance(error, Unverified) else error
    master = 'master %d (%s)' % (tree.master.pid, _name(tree.app))
    lost = 'no control-socket metrics for %s' % master
    if isinstance(telling, WrongMaster):
        same_app = [t for t in trees if t.master.pid == telling.answering_pid and t is not tree]
        if same_app and configured:
            return bounded(
                '%s: its control socket %s is answered by master %d of the same app. One control_socket reaches one '
                "master: remove the option and %s; the check finds each master's socket."
                % (lost, telling.path, telling.answering_pid, _OWN_SOCKET_FIX % 'master')
            )
        if same_app:
            return bounded(
                '%s: its control socket %s is answered by master %d of the same app: the two masters share one path. '
                '%s.' % (lost, telling.path, telling.answering_pid, (_OWN_SOCKET_FIX % 'master').capitalize())
            )
        who = 'pid %s' % telling.answering_pid if telling.answering_pid else 'another process'
        app = ' of app %s' % _name(telling.app) if telling.app else ''
        if configured:
            return bounded(
                '%s: control_socket %s is answered by %s%s, not by this master: set control_socket to the socket '
                "this application's masters were started with (--control-socket)." % (lost, telling.path, who, app)
            )
        return bounded(
            "%s: its control socket %s is answered by %s%s. Two applications share one path (Gunicorn's default "
            'for one HOME or XDG_RUNTIME_DIR): %s.' % (lost, telling.path, who, app, _OWN_SOCKET_FIX % 'application')
        )
    if isinstance(telling, ForeignOwner):
        return bounded(
            "%s: %s belongs to uid %d, not to the master's user (uid %d) or root, so it is not trusted. If another "
            'user could create it, %s in a directory only its user can write.'
            % (lost, telling.path, telling.owner, telling.expected, _OWN_SOCKET_FIX % 'application')
        )
    if isinstance(telling, ProtocolError):
        return bounded('%s this run: %s' % (lost, telling))
    if not configured:
        return None
    if isinstance(telling, ListenerWithoutFile):
        return bounded(
            '%s: the socket file %s is gone while the master still listens on it. Gunicorn deletes it when the old '
            'master exits after a USR2 upgrade, and creates it again at the next worker fork (a TTIN then a TTOU '
            'forks one).' % (lost, telling.path)
        )
    if isinstance(telling, NotASocket):
        return bounded('%s: control_socket %s is %s, not a socket.' % (lost, telling.path, telling.kind))
    return bounded('%s: %s' % (lost, telling))


def version_unknown_message(master_pid: int, why: str) -> str:
    return bounded('No Gunicorn version metadata for master %d: %s.' % (master_pid, why.rstrip('.')))


def bounded(text: str) -> str:
    return clip(text, MESSAGE_CHARS)


def _name(name: str | None) -> str | None:
    return None if name is None else clip(name, NAME_CHARS)


def _pids(trees: list[AppTree]) -> str:
    return clip(', '.join(str(t.master.pid) for t in trees), NAME_CHARS)
