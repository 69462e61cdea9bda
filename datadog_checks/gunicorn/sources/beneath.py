"""Files the check opens on its own initiative inside a master's filesystem, reached without following any link.

A path the check guessed (Gunicorn's default control socket, a listener's name, the master's site-packages) is a
name in a directory other users may write to: a symbolic link planted there would make the Agent open or connect to
whatever it points at. Through /proc/PID/root an absolute link even resolves against the reader's root, not the
master's (proc(5); seen with a chrooted process reading the host's /etc/hostname), so such a path would leave the
master's root altogether. Each component is therefore opened with O_PATH|O_NOFOLLOW relative to the one before, and
a link anywhere refuses the whole path. A path the user configured is not walked this way: it may be a link.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module

_WALK = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
# Where a connect(2) or open(2) reaches the file an O_PATH descriptor holds, with a short name.
SELF_FD = '/proc/self/fd/%d'


class LinkRefused(OSError):
    """A component of the path is a symbolic link (or `..`): the path is not followed."""

    def __init__(self, path: str, component: str):
        super().__init__(errno.ELOOP, 'a path component is a symbolic link: %s' % component, path)
        self.component = component


def open_beneath(start: str, path: str, flags: int = os.O_PATH) -> int:
    """A descriptor of `path` walked from directory `start` (the master's root as this process reaches it: '/',
    /proc/PID/root or /host), one component at a time, never following a link.

    The last component is opened with `flags` (O_PATH: the file itself, whatever its type, to fstat it or to connect
    to it through `SELF_FD`). Raises LinkRefused for a link or `..` anywhere, and the OSError of the first component
    that cannot be opened (PermissionError for a directory this user may not search).
    """
    parts = [part for part in path.split('/') if part not in ('', '.')]
    if not parts or '..' in parts:
        raise LinkRefused(path, '..' if parts else path)
    # The start itself may be the magic link /proc/PID/root: following it is what reaches the master's root.
    fd = os.open(start or '/', os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts):
            following = os.open(part, _WALK, dir_fd=fd)
            os.close(fd)
            fd = following
            mode = os.fstat(fd).st_mode
            walked = '/' + '/'.join(parts[: index + 1])
            if stat_module.S_ISLNK(mode):
                raise LinkRefused(path, walked)
            if index < len(parts) - 1 and not stat_module.S_ISDIR(mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), walked)
        if flags != os.O_PATH:
            # Reopening the descriptor's own file through /proc/self/fd resolves no name again.
            reopened = os.open(SELF_FD % fd, flags | os.O_CLOEXEC)
            os.close(fd)
            fd = reopened
    except BaseException:
        os.close(fd)
        raise
    return fd


def listdir_beneath(start: str, path: str) -> list[str]:
    """The names in directory `path` under `start`, walked as `open_beneath` does."""
    fd = open_beneath(start, path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)
