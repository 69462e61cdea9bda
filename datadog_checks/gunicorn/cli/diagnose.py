"""`python -m datadog_checks.gunicorn diagnose`: every Gunicorn master this user can see, and why a name finds none.

Run it as the Agent's user (`sudo -u dd-agent ...`), in the Agent's container when the Agent runs in one: what it
sees is what the check sees. It reads /proc (under `--procfs-path`) and the pid file it is given, and looks for each
master's control socket exactly as the check does (locate.py: the same candidates, the same verification, with
`show stats` alone); it never sends another command, never signals a process and never prints a command line or a
name without redacting it.

messages.explain_missing is the short form of the same facts that the check puts in its CRITICAL service check.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..collectors.app_discovery import AppSelection, FoundApp, list_apps
from ..collectors.discovery import AppTree, Discovery, Master, Sightings, walk
from ..configuration import DEFAULT_PROCFS_ROOT
from ..messages import SETPROCTITLE_HINT, closest_names, explain_missing, what_was_seen
from ..sources.control_socket import locate
from ..sources.control_socket.client import ControlSocketError, SocketMissing, SocketPermissionDenied
from ..sources.pidfile import PidFiles
from ..sources.procfs import ProcError, ProcFS
from ..sources.redaction import app_name, clip, redacted_command
from ..sources.version import VersionError, installed_version

CAP_SYS_PTRACE = 19  # include/uapi/linux/capability.h
LOG = logging.getLogger(__name__)


# The long form


@dataclass
class MasterReport:
    pid: int
    name: str | None
    user: str
    titled: bool
    workers: int
    upgrade_masters: int
    dirty_workers: int
    worker_class: str
    version: str
    control_socket: str
    command: str | None  # redacted; only for masters without titles (a titled master's argv is its title)
    pid_file: str | None  # absolute, in the master's mount namespace; None when unknown or not resolvable
    starting: bool
    upgrade_of: bool = False  # a USR2 new master (`NAME.2`) under a master of the same application
    # What a pasted conf.yaml needs for this user: the socket path when it is found only because it was configured,
    # and the binds when neither the fds nor a control socket name the listeners.
    socket_needs_option: bool = False
    listeners_found: bool = True
    binds: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)  # why an option could not be suggested


@dataclass
class Source:
    """A kind of data, what it feeds, and whether this user may read it."""

    what: str
    feeds: str
    available: bool
    why: str


@dataclass
class Diagnosis:
    procfs_root: str
    user: str
    ptrace: bool
    hidepid: str | None
    masters: list[MasterReport] = field(default_factory=list)
    sightings: Sightings = field(default_factory=Sightings)
    requested_name: str | None = None
    requested_pid_file: str | None = None
    requested_control_socket: str | None = None
    pid_file_masters: list[int] = field(default_factory=list)
    pid_file_problem: str | None = None
    sources: list[Source] = field(default_factory=list)
    procfs_missing: bool = False

    @property
    def matched(self) -> list[MasterReport]:
        if self.requested_pid_file:
            return [m for m in self.masters if m.pid in self.pid_file_masters]
        if self.requested_name is None:
            return self.masters
        return [m for m in self.masters if m.name == app_name(self.requested_name)]

    @property
    def ok(self) -> bool:
        return not self.procfs_missing and bool(self.matched)


def diagnose(
    procfs: ProcFS, proc_name: str | None = None, pid_file: str | None = None, control_socket: str | None = None
) -> Diagnosis:
    me = os.geteuid()
    result = Diagnosis(
        procfs_root=procfs.root,
        user=_user_name(me),
        ptrace=me == 0 or _has_capability(CAP_SYS_PTRACE),
        hidepid=procfs.hidepid(),
        requested_name=proc_name,
        requested_pid_file=pid_file,
        requested_control_socket=control_socket,
    )
    if not os.path.isdir(procfs.root) or not os.path.exists(os.path.join(procfs.root, 'self')):
        result.procfs_missing = True
        return result
    discovery = Discovery(procfs, None, LOG)
    masters, result.sightings = walk(procfs, LOG, lambda name: True, untitled='always')
    if pid_file and not os.path.isabs(pid_file):
        # The check refuses it: the Agent would resolve it in its own directory, not in the master's.
        result.pid_file_problem = (
            "a relative pid_file is refused by the check: Gunicorn's --pid is relative to the master's working "
            "directory, not the Agent's; give its absolute path (the masters below show it when their command line "
            'does)'
        )
    elif pid_file:
        found = PidFiles(procfs, pid_file, LOG, expected_name=proc_name).masters()
        result.pid_file_masters = [m.stat.pid for m in found.masters]
        result.pid_file_problem = str(found.problem) if found.problem else None
        known = {m.stat.pid for m in masters}
        masters += [Master(m.stat, m.name, m.command) for m in found.masters if m.stat.pid not in known]
    trees = {m.stat.pid: discovery.tree(m) for m in masters}
    upgrades = {u.pid for tree in trees.values() for u in tree.upgrade_masters}
    result.masters = [
        _report(procfs, m, trees[m.stat.pid], control_socket, m.stat.pid in upgrades)
        for m in sorted(masters, key=lambda m: m.stat.pid)
    ]
    result.sources = _sources(procfs, list(trees.values()), result)
    return result


def _report(procfs: ProcFS, master: Master, tree: AppTree, configured: str | None, upgrade: bool) -> MasterReport:
    uid = _uid(procfs, master.stat.pid)
    command = master.command
    fds = _read_fds(procfs, master.stat.pid)
    version, version_text = _version(procfs, master)
    socket = control_socket_state(procfs, tree, uid, configured, fds, version)
    report = MasterReport(
        pid=master.stat.pid,
        name=master.name,
        user=_user_name(uid) if uid is not None else 'unknown',
        titled=master.titled,
        workers=len(tree.workers),
        upgrade_masters=len(tree.upgrade_masters),
        dirty_workers=len(tree.dirty_workers),
        worker_class=_worker_class(master),
        control_socket=socket.text,
        version=version_text,
        command=redacted_command(command.argv, max_chars=4000) if command is not None else None,
        pid_file=None,
        starting=tree.starting,
        upgrade_of=upgrade,
        socket_needs_option=socket.answered and configured is not None and not socket.answered_unconfigured,
        listeners_found=fds or socket.answered,
        binds=tuple(b for b in command.options.get('--bind', ()) if b) if command is not None else (),
    )
    if command is not None and command.pid_file:
        report.pid_file = _absolute_pid_file(procfs, master.stat.pid, command.pid_file, report.notes)
    return report


def _version(procfs: ProcFS, master: Master) -> tuple[str | None, str]:
    """The Gunicorn version as the check reads it (its installation, no command run), and how it was found."""
    try:
        argv = master.command.argv if master.command is not None else ()
        version = installed_version(procfs, master.stat.pid, argv)
    except VersionError as exc:
        return None, 'unknown: %s (the check then runs `gunicorn --version`, or the `gunicorn` option)' % exc
    return version, '%s (from its installation)' % version


def _read_fds(procfs: ProcFS, pid: int) -> bool:
    """Whether this user may read the master's fds (ptrace-level access): what ties sockets to it."""
    try:
        procfs.read_fd_links(pid)
    except ProcError:
        return False
    return True


def _absolute_pid_file(procfs: ProcFS, pid: int, pid_file: str, notes: list[str]) -> str | None:
    """Gunicorn's `--pid` as an absolute path: a relative one is relative to the master's working directory
    (its --chdir), which only /proc/PID/cwd tells (ptrace-level access)."""
    if os.path.isabs(pid_file):
        return os.path.normpath(pid_file)
    try:
        cwd = procfs.read_cwd(pid)
    except ProcError:
        notes.append(
            "pid_file left out: Gunicorn's --pid %s is relative to the master's working directory, which this user "
            'may not read; write its absolute path' % redacted_command([pid_file], max_chars=200)
        )
        return None
    return os.path.normpath(os.path.join(cwd, pid_file))


def _worker_class(master: Master) -> str:
    if master.command is None:
        return 'unknown (a titled master hides its command line; `show config` on the control socket tells)'
    configured = master.command.worker_class
    if configured is not None:
        return configured
    if (master.command.threads or 1) > 1:
        return 'gthread (sync with --threads > 1)'
    if master.command.has('--config'):
        return 'sync unless the configuration file sets another'
    return 'sync (the default)'


CONTROL_SOCKET_RELEASE = (25, 1)


def _release(version: str) -> tuple[int, ...]:
    numbers = []
    for part in version.split('.')[:2]:
        digits = ''.join(itertools.takewhile(str.isdigit, part))
        numbers.append(int(digits) if digits else 0)
    return tuple(numbers)


@dataclass
class SocketState:
    text: str
    answered: bool = False  # verified with what diagnose was given
    answered_unconfigured: bool = False  # verified without the control_socket option


def control_socket_state(
    procfs: ProcFS,
    tree: AppTree,
    uid: int | None,
    configured: str | None,
    fds: bool = True,
    version: str | None = None,
) -> SocketState:
    """The control socket the check would use for this master, as the check finds and verifies it, in words."""
    if version is not None and _release(version) < CONTROL_SOCKET_RELEASE:
        return SocketState('none: Gunicorn %s has no control socket (it came with 25.1)' % version)
    if uid is None:
        return SocketState("unknown (the master's /proc/PID/status is not readable)")
    state = _verify(procfs, tree, uid, configured, fds)
    if configured is None:
        state.answered_unconfigured = state.answered
    elif state.answered:
        state.answered_unconfigured = _verify(procfs, tree, uid, None, fds).answered
    return state


def _verify(procfs: ProcFS, tree: AppTree, uid: int, configured: str | None, fds: bool) -> SocketState:
    found = locate.candidates(procfs, tree.master, uid, configured)
    if found is None:
        return SocketState('none: disabled by --no-control-socket on its command line')
    if not found:
        if fds:
            return SocketState(
                'none: the master holds no listening unix socket of its own (Gunicorn before 25.1, the socket '
                "disabled in its configuration, a bind that failed: see Gunicorn's error log; a master that just "
                'started binds it after its first workers)'
            )
        return SocketState(
            "absent where this user can look: no socket listens at Gunicorn's defaults for the master's user in its "
            'network namespace. A socket elsewhere is found with ptrace-level access (root or CAP_SYS_PTRACE), or '
            'with control_socket set'
        )
    try:
        who = locate.identity(procfs, tree.master, tree.upgrade_masters)
        verified = locate.verified_exchange(procfs, found, who)
    except ProcError as exc:
        return SocketState('unknown (%s)' % exc)
    except ControlSocketError as exc:
        return SocketState(_refused(exc, found))
    with verified.client:
        answered = (
            'the new master %d of a USR2 upgrade' % verified.upgrade_pid if verified.upgrade_pid else 'this master'
        )
        text = '%s (found from %s), answered by %s' % (verified.candidate.reach, verified.candidate.source, answered)
        return SocketState(text, answered=True)


def _refused(error: ControlSocketError, tried: list[locate.Candidate]) -> str:
    if isinstance(error, locate.Unverified) and not error.tied:
        return _untied(error)
    # What is there, not what the check would warn about: a socket seen listening comes before a guessed path.
    telling = error.observed if isinstance(error, locate.Unverified) else error
    where = telling.path or ', '.join(c.path for c in tried)
    if isinstance(telling, locate.WrongMaster):
        who = 'pid %s' % telling.answering_pid if telling.answering_pid else 'another process'
        app = ' (app %s)' % telling.app if telling.app else ''
        return 'held by another master: %s is answered by %s%s' % (where, who, app)
    if isinstance(telling, locate.ForeignOwner):
        return "not trusted: %s belongs to uid %d, not to the master's user" % (where, telling.owner)
    if isinstance(telling, SocketPermissionDenied):
        if telling.candidate is not None and telling.candidate.seen:
            return 'present (listening in its network namespace), refused to this user by permission: %s' % telling
        return 'refused to this user by permission, present or not: %s' % telling
    if isinstance(telling, locate.ListenerWithoutFile):
        return (
            'file gone at %s while the master still listens (after a USR2 upgrade Gunicorn deletes it until the '
            'next worker fork)' % where
        )
    if isinstance(telling, locate.NotASocket):
        return 'not a socket: %s is %s' % (where, telling.kind)
    if isinstance(telling, SocketMissing):
        return 'absent (looked at %s; Gunicorn before 25.1 has none)' % ', '.join(c.path for c in tried)
    return 'unusable: %s' % telling


def _untied(error: locate.Unverified) -> str:
    """Only guesses were tried (no access to the master's fds): say what listens there, never that it is the
    master's socket."""
    seen = []
    for failure in error.failures:
        if isinstance(failure, locate.WrongMaster):
            what = "another master's (pid %s%s)" % (
                failure.answering_pid or '?',
                ', app %s' % failure.app if failure.app else '',
            )
        elif isinstance(failure, SocketPermissionDenied):
            what = 'refused to this user by permission'
        elif isinstance(failure, locate.ForeignOwner):
            what = 'owned by uid %d' % failure.owner
        elif isinstance(failure, locate.LinkedPath):
            what = 'not followed: a symbolic link'
        else:
            what = type(failure).__name__
        seen.append('%s (%s)' % (failure.path, what))
    return (
        'not tied to this master: sockets listen in its network namespace at %s, but without ptrace-level access '
        '(root or CAP_SYS_PTRACE) nothing shows which application holds them. Set control_socket to its path, '
        'readable by this user, to use it' % '; '.join(seen)
    )


def _sources(procfs: ProcFS, trees: list[AppTree], result: Diagnosis) -> list[Source]:
    """What this user may read, tried on a real worker (else a master) of the masters seen; rules alone without one."""
    processes = [w.pid for t in trees for w in t.workers] + [t.master.pid for t in trees]
    hidden = result.hidepid is not None and not result.ptrace
    world = 'world-readable%s' % (
        " only for this user's processes: /proc is mounted with %s" % result.hidepid if hidden else ''
    )
    ptrace = 'needs root or CAP_SYS_PTRACE (or the same user as a dumpable process)'
    return [
        Source(
            '/proc/PID/stat, schedstat, task/*/children',
            'gunicorn.workers, gunicorn.is_running, gunicorn.masters, gunicorn.threads, gunicorn.memory.rss, '
            'gunicorn.cpu.*, gunicorn.master.uptime, gunicorn.worker.age.*, gunicorn.workers.restarts',
            *_probe(procfs, processes, 'schedstat', world, not hidden),
        ),
        Source(
            '/proc/PID/smaps_rollup',
            'gunicorn.memory.pss, gunicorn.memory.pss.max (without it memory is RSS only)',
            *_probe(procfs, processes, 'smaps_rollup', ptrace, result.ptrace),
        ),
        Source(
            '/proc/PID/net/tcp, tcp6, unix',
            'gunicorn.listen.queued, gunicorn.connections.in_flight for listeners named by `bind` or the control '
            "socket (read through sock_diag instead when the master shares the Agent's network namespace)",
            *_probe(procfs, processes, 'net/tcp', world, not hidden),
        ),
        Source(
            '/proc/PID/fd',
            'worker heartbeat age without the control socket; the listeners without `bind` or a control socket '
            '(gunicorn.listen.*, '
            'gunicorn.connections.in_flight) and the exact working split of sync workers',
            *_probe(procfs, processes, 'fd', ptrace, result.ptrace),
        ),
    ]


def _probe(procfs: ProcFS, pids: list[int], what: str, rule: str, expected: bool) -> tuple[bool, str]:
    """Try to read `what` of the first process that still exists; without any, say what the rule predicts."""
    for pid in pids:
        path = procfs.path(pid, *what.split('/'))
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                with open(path, 'rb') as f:
                    f.read(1)
        except FileNotFoundError:
            continue  # exited since it was listed
        except OSError as exc:
            return False, '%s (%s: %s)' % (rule, path, exc.strerror)
        return True, '%s (read %s)' % (rule, path)
    return expected, '%s (no Gunicorn process to try it on)' % rule


def _uid(procfs: ProcFS, pid: int) -> int | None:
    try:
        return procfs.read_status(pid).uid
    except ProcError:
        return None


def _user_name(uid: int) -> str:
    try:
        return '%s (uid %d)' % (pwd.getpwuid(uid).pw_name, uid)
    except KeyError:
        return 'uid %d' % uid


def _has_capability(bit: int, status: str = '/proc/self/status') -> bool:
    try:
        with open(status, 'rb') as f:
            for line in f:
                if line.startswith(b'CapEff:'):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


# Rendering


def render(d: Diagnosis) -> str:
    out = ['Gunicorn diagnosis', '==================', '']
    out.append(
        'Seen as: %s; CAP_SYS_PTRACE: %s; proc root: %s%s'
        % (d.user, 'yes' if d.ptrace else 'no', d.procfs_root, '; mounted with %s' % d.hidepid if d.hidepid else '')
    )
    if d.procfs_missing:
        out += [
            '',
            "No process table at %s. The check reads Linux's /proc; it cannot run on macOS or Windows. In a "
            "container, mount the host's /proc (for example at /host/proc) and pass --procfs-path." % d.procfs_root,
        ]
        return '\n'.join(out) + '\n'
    out += ['', 'Gunicorn masters (%d):' % len(d.masters)]
    if not d.masters:
        out.append('  none')
    for m in d.masters:
        out.append('  - %s (pid %d)%s' % (m.name, m.pid, '  [still starting: no workers yet]' if m.starting else ''))
        out.append('      user: %s' % m.user)
        workers = '%d' % m.workers
        if m.upgrade_masters:
            workers += ' (includes those of %d USR2 upgrade master)' % m.upgrade_masters
        if m.dirty_workers:
            workers += '; %d dirty workers' % m.dirty_workers
        out.append('      workers: %s' % workers)
        out.append('      worker class: %s' % m.worker_class)
        out.append('      version: %s' % m.version)
        out.append('      control socket: %s' % m.control_socket)
        out.append('      titles: %s' % _titles(m))
        if m.command:
            out.append('      command: %s' % m.command)
    out += ['']
    out += _verdict(d)
    out += ['', 'What this user may read:']
    for s in d.sources:
        out.append('  - %s: %s -> %s' % (s.what, 'yes' if s.available else 'NO', s.feeds))
        out.append('      %s' % s.why)
    out += ['', 'A conf.yaml that would work (gunicorn.d/conf.yaml):', '']
    out += ['    ' + line for line in suggested_config(d).splitlines()]
    return '\n'.join(out) + '\n'


def _titles(m: MasterReport) -> str:
    if m.titled:
        return 'set'
    if m.starting:
        # Gunicorn sets its title only once the application is loaded: a --preload import shows the raw command line.
        return 'not yet (the master is still starting; Gunicorn sets titles once the application is loaded)'
    return 'NOT set (raw command line: setproctitle missing?)'


def _verdict(d: Diagnosis) -> list[str]:
    out = []
    if d.requested_pid_file:
        if d.pid_file_masters:
            out.append(
                'pid file %s: names master %s.' % (d.requested_pid_file, ', '.join(map(str, d.pid_file_masters)))
            )
        else:
            out.append('pid file %s: %s' % (d.requested_pid_file, d.pid_file_problem or 'names no master'))
    if d.requested_name is not None:
        matched = [m for m in d.masters if m.name == d.requested_name]
        if matched:
            out.append('proc_name %s: found master %s.' % (d.requested_name, ', '.join(str(m.pid) for m in matched)))
            if any(not m.titled for m in matched):
                out.append(
                    '  Found from the command line because titles are missing. %s: discovery is then cheaper and '
                    'exact.' % SETPROCTITLE_HINT
                )
        else:
            out.append(explain_missing(d.requested_name, d.sightings, hidepid=d.hidepid).split(' Run `')[0])
    elif not d.requested_pid_file:
        out.append('No name asked for (--proc-name): every master visible is listed.')
    if not d.masters and d.requested_name is None:
        out += what_was_seen('', d.sightings, d.hidepid)
    return out


def suggested_config(d: Diagnosis) -> str:
    """A conf.yaml that works as pasted, from any working directory, for this user: one instance per application
    (a USR2 upgrade's `NAME.2` master is part of its application), each option with a comment saying why."""
    comments = []
    chosen: list[MasterReport] = d.matched or d.masters
    if d.requested_name is not None and not d.matched and d.masters:
        close = closest_names(d.requested_name, [m.name or '' for m in d.masters])[:1]
        chosen = [m for m in d.masters if close and m.name == close[0]] or d.masters
        comments.append(
            '# No master is named %s; %s:'
            % (d.requested_name, 'the closest name' if close else 'one instance for each master that runs')
        )
    instances: list[list[str]] = []
    for name in dict.fromkeys(m.name for m in chosen if not m.upgrade_of):
        masters = [m for m in chosen if m.name == name]
        instances.append(_instance(name, masters, d))
    if not instances:
        lines = ['# No running master matched: start the application, then run diagnose again.']
        lines.append('proc_name: %s' % _scalar(d.requested_name or '<PROC_NAME>'))
        if d.requested_pid_file:
            lines.append('pid_file: %s' % _scalar(d.requested_pid_file))
        instances.append(lines)
    out = [*comments, 'init_config:', '', 'instances:']
    for lines in instances:
        first = next(i for i, line in enumerate(lines) if not line.startswith('#'))
        out += ['  ' + line for line in lines[:first]]
        out.append('  - ' + lines[first])
        out += ['    ' + line for line in lines[first + 1 :]]
    return '\n'.join(out) + '\n'


def _instance(name: str | None, masters: list[MasterReport], d: Diagnosis) -> list[str]:
    """One instance's lines (comments first, the option after its comment), for the masters of one application."""
    master = masters[0]
    lines = ['# The name in `gunicorn: master [...]`%s; also the app: tag.' % (
        '' if master.titled else ' (no titles: the --name or app module of its command line)'
    )]  # fmt: skip
    lines.append('proc_name: %s' % _scalar(name or '<PROC_NAME>'))
    pid_file = next((m.pid_file for m in masters if m.pid_file), None)
    if pid_file:
        lines += [
            "# Gunicorn's --pid, made absolute from the master's working directory: the Agent runs elsewhere.",
            'pid_file: %s' % _scalar(pid_file),
        ]
    lines += ['# %s' % note for m in masters for note in m.notes]
    if any(m.socket_needs_option for m in masters):
        lines += [
            '# The control socket diagnose was given: without this option the check does not find it.',
            'control_socket: %s' % _scalar(d.requested_control_socket),
        ]
    if not all(m.listeners_found for m in masters):
        why = "# This user reads neither the master's sockets (ptrace-level access) nor its control socket"
        binds = next((m.binds for m in masters if m.binds), ())
        if binds:
            lines += [why + ': the addresses of --bind on its command line.', 'bind: [%s]' % _list(binds)]
        else:
            lines += [
                why + ': write the addresses Gunicorn binds (its log says `Listening at:`), or requests waiting on',
                '# I/O count as idle.',
                '# bind: [127.0.0.1:8000]',
            ]
    if any(m.version.startswith('unknown') for m in masters):
        lines += [
            "# This user cannot read the master's installation for the version metadata: name the application's",
            '# gunicorn (the check then warns no more).',
            '# gunicorn: /srv/app/venv/bin/gunicorn',
        ]
    if not master.titled:
        lines.append(
            '# Found by its command line: install setproctitle in its environment to make discovery cheaper and exact.'
        )
    return lines


def _scalar(value: str) -> str:
    # A JSON string is a YAML double-quoted scalar: any name (colons, brackets, quotes) pastes as itself.
    return json.dumps(value)


def _list(values: Iterable[str]) -> str:
    return ', '.join(_scalar(v) for v in values)


def render_apps(apps: list[FoundApp]) -> str:
    """What a node-wide instance (`app_autodiscovery`) would report, and which rule named each application."""
    out = ['', 'Applications for app_autodiscovery (%d), each reported as app:<NAME>:' % len(apps)]
    if not apps:
        out.append('  none')
    for app in apps:
        past = '' if app.reported else '  [past the default max_apps: not reported]'
        masters = ', '.join(str(pid) for pid in app.masters)
        out.append('  - %s: master %s, named by %s%s' % (clip(app.app, 200), masters, '; '.join(app.named_by), past))
    return '\n'.join(out) + '\n'


# Command line


def build_parser(prog: str = 'python -m datadog_checks.gunicorn diagnose') -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description='List the Gunicorn masters this user can see and explain why a name or pid file finds none.',
    )
    parser.add_argument('--proc-name', metavar='NAME', help='the proc_name the check is (to be) configured with')
    parser.add_argument('--pid-file', metavar='FILE', help='the pid_file the check is (to be) configured with')
    parser.add_argument('--control-socket', metavar='PATH', help='the control_socket the check is configured with')
    parser.add_argument(
        '--procfs-path', metavar='DIR', default=DEFAULT_PROCFS_ROOT, help="the Agent's procfs_path (default /proc)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = diagnose(ProcFS(args.procfs_path), args.proc_name, args.pid_file, args.control_socket)
    print(render(result), end='')
    if not result.procfs_missing:
        print(render_apps(list_apps(ProcFS(args.procfs_path), LOG, AppSelection())), end='')
    return 0 if result.ok else 1
