from __future__ import annotations

import pytest

from datadog_checks.gunicorn import GunicornCheck
from datadog_checks.gunicorn.sources.procfs import ProcFS

from .fakeproc import FakeProc
from .gunicorn_env import Gunicorn
from .older_base_stubs import newest_assertions


def pytest_addoption(parser):
    parser.addoption('--soak', action='store_true', help='also run the chaos soak (minutes long; `tox -e bench` does)')


def pytest_collection_modifyitems(config, items):
    _check_integration_markers(items)
    if config.getoption('--soak'):
        return
    skip = pytest.mark.skip(reason='the chaos soak runs with --soak (tox -e bench)')
    for item in items:
        if 'soak' in item.keywords:
            item.add_marker(skip)


def _check_integration_markers(items) -> None:
    """`-m "not integration"` selects the unit tests only if the file name and the marker always agree."""
    wrong = sorted(
        {
            item.path.name
            for item in items
            if item.path.name.startswith(('test_unit_', 'test_integration_'))
            and item.path.name.startswith('test_integration_') != (item.get_closest_marker('integration') is not None)
        }
    )
    if wrong:
        raise pytest.UsageError(
            'test_integration_* files must be marked `pytestmark = pytest.mark.integration`, and test_unit_* files '
            'must not be: %s' % ', '.join(wrong)
        )


@pytest.fixture
def gunicorn(tmp_path):
    """Start real Gunicorn servers for one test: `gunicorn(version=..., workers=..., args=[...])`; all are stopped."""
    started: list[Gunicorn] = []

    def start(wait: bool = True, **kwargs) -> Gunicorn:
        server = Gunicorn(tmp_path / ('server%d' % len(started)), **kwargs)
        started.append(server)
        return server.start(wait=wait)

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def aggregator(aggregator):
    """datadog_checks.dev's aggregator stub, asserting as on the newest base on every base (older_base_stubs.py)."""
    return newest_assertions(aggregator)


@pytest.fixture
def make_check():
    def make(instance: dict, init_config: dict | None = None) -> GunicornCheck:
        check = GunicornCheck('gunicorn', init_config or {}, [instance])
        check.check_id = 'gunicorn:test'
        return check

    return make


@pytest.fixture
def fake(tmp_path):
    """A writable proc tree in tmp_path (see fakeproc.py)."""
    return FakeProc(tmp_path)


@pytest.fixture
def procfs(fake):
    return ProcFS(str(fake.root))
