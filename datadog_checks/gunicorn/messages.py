"""The words the check sends: service-check messages and warnings, shown in the Agent's status and in Datadog.

Built from what the check's own run saw (no extra reads here). `diagnose` prints the long form of the same facts.
"""

from __future__ import annotations

import difflib

from .collectors.discovery import AppTree, Sightings
from .sources.pidfile import PidFileError

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
    parts = []
    if pid_file_problem is not None:
        parts.append('No Gunicorn master found through pid_file: %s.' % str(pid_file_problem).rstrip('.'))
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
    return ' '.join(parts)


def titles_missing_message(app: str | None, trees: list[AppTree]) -> str:
    return (
        'Gunicorn master %s of %s runs without process titles: the check found it from its command line. Install '
        "setproctitle in the application's Python environment (pip install setproctitle, then restart Gunicorn) to "
        'make discovery cheaper and exact.' % (', '.join(str(t.master.pid) for t in trees), app)
    )


def no_workers_message(app: str | None, trees: list[AppTree]) -> str:
    masters = ', '.join(str(t.master.pid) for t in trees)
    if all(t.starting for t in trees):
        return (
            '0 working and 0 idle workers for %s: master %s is still starting (it shows its command line and has '
            'no workers yet, as while `--preload` imports the application)' % (app, masters)
        )
    return '0 working and 0 idle workers for %s: master %s has no workers' % (app, masters)


def what_was_seen(app: str, seen: Sightings, hidepid: str | None) -> list[str]:
    if seen.unreadable_root:
        return [
            "The process table cannot be listed (%s): set the Agent's procfs_path to where the host's /proc is "
            "mounted; the check reads Linux's /proc and does not run on macOS." % seen.unreadable_root
        ]
    parts = []
    names = sorted(set(seen.titled) | set(seen.untitled))
    if names:
        close = difflib.get_close_matches(app, names, n=3, cutoff=0.6)
        listed = close or names[:MAX_NAMES]
        described = ', '.join('`%s`%s' % (n, '' if n in seen.titled else ' (no title)') for n in listed)
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
