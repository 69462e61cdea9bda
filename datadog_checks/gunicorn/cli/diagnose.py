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
import difflib
import logging
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass, field

import yaml

from ..collectors.app_discovery import AppSelection, FoundApp, list_apps
from ..collectors.discovery import AppTree, Discovery, Master, Sightings, walk
from ..configuration import DEFAULT_PROCFS_ROOT
from ..messages import SETPROCTITLE_HINT, explain_missing, what_was_seen
from ..sources.control_socket import locate
from ..sources.control_socket.client import ControlSocketError, SocketMissing, SocketPermissionDenied
from ..sources.pidfile import PidFiles
from ..sources.procfs import ProcError, ProcFS
from ..sources.redaction import app_name, clip, redacted_command

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
    control_socket: str
    command: str | None  # redacted; only for masters without titles (a titled master's argv is its title)
    pid_file: str | None
    starting: bool


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
    )
    if not os.path.isdir(procfs.root) or not os.path.exists(os.path.join(procfs.root, 'self')):
        result.procfs_missing = True
        return result
    discovery = Discovery(procfs, None, LOG)
    masters, result.sightings = walk(procfs, LOG, lambda name: True, untitled='always')
    if pid_file:
        found = PidFiles(procfs, pid_file, LOG, expected_name=proc_name).masters()
        result.pid_file_masters = [m.stat.pid for m in found.masters]
        result.pid_file_problem = str(found.problem) if found.problem else None
        known = {m.stat.pid for m in masters}
        masters += [Master(m.stat, m.name, m.command) for m in found.masters if m.stat.pid not in known]
    trees = {m.stat.pid: discovery.tree(m) for m in masters}
    result.masters = [
        _report(procfs, m, trees[m.stat.pid], control_socket) for m in sorted(masters, key=lambda m: m.stat.pid)
    ]
    result.sources = _sources(procfs, list(trees.values()), result)
    return result


def _report(procfs: ProcFS, master: Master, tree: AppTree, configured: str | None) -> MasterReport:
    uid = _uid(procfs, master.stat.pid)
    command = master.command
    return MasterReport(
        pid=master.stat.pid,
        name=master.name,
        user=_user_name(uid) if uid is not None else 'unknown',
        titled=master.titled,
        workers=len(tree.workers),
        upgrade_masters=len(tree.upgrade_masters),
        dirty_workers=len(tree.dirty_workers),
        worker_class=_worker_class(master),
        control_socket=control_socket_state(procfs, tree, uid, configured),
        command=redacted_command(command.argv, max_chars=4000) if command is not None else None,
        pid_file=command.pid_file if command is not None else None,
        starting=tree.starting,
    )


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


def control_socket_state(procfs: ProcFS, tree: AppTree, uid: int | None, configured: str | None) -> str:
    """The control socket the check would use for this master, as the check finds and verifies it, in words."""
    if uid is None:
        return "unknown (the master's /proc/PID/status is not readable)"
    found = locate.candidates(procfs, tree.master, uid, configured)
    if found is None:
        return 'disabled (--no-control-socket)'
    try:
        who = locate.identity(procfs, tree.master, tree.upgrade_masters)
        verified = locate.verified_exchange(procfs, found, who)
    except ProcError as exc:
        return 'unknown (%s)' % exc
    except ControlSocketError as exc:
        return _refused(exc, found)
    with verified.client:
        answered = (
            'the new master %d of a USR2 upgrade' % verified.upgrade_pid if verified.upgrade_pid else 'this master'
        )
        return '%s (found from %s), answered by %s' % (verified.candidate.reach, verified.candidate.source, answered)


def _refused(error: ControlSocketError, tried: list[locate.Candidate]) -> str:
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
            'worker heartbeat age; the listeners without `bind` or a control socket (gunicorn.listen.*, '
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
        out.append('      control socket: %s' % m.control_socket)
        out.append('      titles: %s' % ('set' if m.titled else 'NOT set (raw command line: setproctitle missing?)'))
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
    instances: list[dict] = []
    comments = []
    chosen: Iterable[MasterReport] = d.matched or d.masters
    if d.requested_name is not None and not d.matched and d.masters:
        close = difflib.get_close_matches(d.requested_name, [m.name or '' for m in d.masters], n=1, cutoff=0.6)
        chosen = [m for m in d.masters if close and m.name == close[0]] or d.masters
        comments.append(
            '# No master is named %s; %s:'
            % (d.requested_name, 'the closest name' if close else 'one instance for each master that runs')
        )
    for name in dict.fromkeys(m.name for m in chosen):
        instance: dict = {'proc_name': name}
        master = next(m for m in chosen if m.name == name)
        if master.pid_file:
            instance['pid_file'] = master.pid_file
        instances.append(instance)
        if not master.titled:
            comments.append(
                '# %s runs without process titles: found by its command line. Install setproctitle in its '
                'environment to make discovery cheaper and exact.' % name
            )
    if not instances:
        instances.append({'proc_name': d.requested_name or '<PROC_NAME>'})
        if d.requested_pid_file:
            instances[0]['pid_file'] = d.requested_pid_file
        comments.append('# No running master matched: start the application, then run diagnose again.')
    text = yaml.safe_dump({'init_config': None, 'instances': instances}, sort_keys=False, default_flow_style=False)
    return '\n'.join([*comments, text.replace('init_config: null', 'init_config:')])


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
