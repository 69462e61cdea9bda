"""Paths walked inside a master's root without following links: a link anywhere refuses the whole path."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from datadog_checks.gunicorn.sources.beneath import SELF_FD, LinkRefused, listdir_beneath, open_beneath


def test_a_plain_path_is_opened_and_a_socket_is_reached_through_its_descriptor(tmp_path):
    (tmp_path / 'run').mkdir()
    path = str(tmp_path / 'run' / 'app.ctl')
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen(1)
        fd = open_beneath('/', path)
        try:
            assert stat.S_ISSOCK(os.fstat(fd).st_mode)
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(SELF_FD % fd)
                server.accept()[0].close()
        finally:
            os.close(fd)


@pytest.mark.parametrize('where', ['directory', 'file'])
def test_a_link_anywhere_is_refused(tmp_path, where):
    real = tmp_path / 'real'
    real.mkdir()
    (real / 'gunicorn.ctl').write_text('')
    if where == 'directory':
        os.symlink(real, tmp_path / 'home')
        path = tmp_path / 'home' / 'gunicorn.ctl'
    else:
        os.symlink(real / 'gunicorn.ctl', tmp_path / 'link.ctl')
        path = tmp_path / 'link.ctl'
    with pytest.raises(LinkRefused) as info:
        open_beneath('/', str(path))
    assert str(path) in str(info.value) and info.value.component.endswith('home' if where == 'directory' else '.ctl')
    with pytest.raises(LinkRefused):
        open_beneath('/', str(path), os.O_RDONLY)


def test_an_absolute_link_does_not_leave_the_start(tmp_path):
    # Inside a container's root (here a directory standing for it), `/x/link -> /etc` would reach the host's /etc.
    root = tmp_path / 'root'
    (root / 'x').mkdir(parents=True)
    os.symlink('/etc', root / 'x' / 'link')
    with pytest.raises(LinkRefused):
        listdir_beneath(str(root), '/x/link')
    assert listdir_beneath(str(root), '/x') == ['link']


def test_dot_dot_and_missing_files(tmp_path):
    with pytest.raises(LinkRefused):
        open_beneath('/', str(tmp_path) + '/../x')
    with pytest.raises(FileNotFoundError):
        open_beneath('/', str(tmp_path / 'missing'))
    (tmp_path / 'file').write_text('')
    with pytest.raises(NotADirectoryError):
        open_beneath('/', str(tmp_path / 'file' / 'below'))
