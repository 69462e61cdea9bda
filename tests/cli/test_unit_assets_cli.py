"""The assets installer against a loopback fake of Datadog's API (fake_datadog_api.py), and the wheel that carries it.

Datadog itself cannot be reached from here: what these tests cannot show is whether Datadog accepts the exact widget,
monitor option and grok syntax of our assets. The fake checks what the API reference states: endpoints, required and
known fields, processor field names, authentication headers, error and rate-limit shapes.
"""

from __future__ import annotations

import ast
import json
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from datadog_checks.gunicorn.cli.assets import api as datadog_api
from datadog_checks.gunicorn.cli.assets import bodies as asset_bodies
from datadog_checks.gunicorn.cli.assets import command as assets
from datadog_checks.gunicorn.cli.assets import files as asset_files
from datadog_checks.gunicorn.cli.assets.api import MAX_ATTEMPTS, SITES, ApiError, DatadogAPI
from datadog_checks.gunicorn.cli.assets.bodies import MANAGED_BY, PIPELINE_NAME, asset_tag, build_bodies
from datadog_checks.gunicorn.cli.assets.files import AssetError, AssetFile, load_assets

from . import fake_datadog_api
from .fake_datadog_api import API_KEY, APP_KEY, FakeDatadogAPI

REPO = Path(__file__).resolve().parents[2]
MONITOR_FILES = sorted((REPO / 'assets' / 'monitors').glob('*.json'))
KEYS_ENV = {'DD_API_KEY': API_KEY, 'DD_APP_KEY': APP_KEY}


@pytest.fixture(autouse=True)
def short_waits(monkeypatch):
    # Retries wait as Datadog's headers say; without headers the backoff doubles from BACKOFF seconds.
    monkeypatch.setattr(datadog_api, 'BACKOFF', 0.01)


@pytest.fixture
def fake():
    with FakeDatadogAPI() as server:
        yield server


@pytest.fixture
def run(capsys):
    """Run the command line in-process: (exit code, stdout, stderr)."""

    def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        code = assets.main(list(argv), KEYS_ENV if env is None else env)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def install(run, fake, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    return run('install', '--api-url', fake.url, *extra, env=env)


def managed_dashboards(fake: FakeDatadogAPI) -> list[dict]:
    return [d for d in fake.dashboards.values() if MANAGED_BY in (d.get('description') or '')]


def assert_one_error_line(err: str, *words: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith('error: ')
    for word in words:
        assert word in lines[0], lines[0]


# Install, idempotency, updates.


def test_first_install_creates_one_dashboard_one_monitor_per_file_and_one_pipeline(run, fake):
    user_dashboard = fake.add_dashboard('Gunicorn - Overview', 'a copy someone made by hand')
    integration_pipeline = fake.add_integration_pipeline()

    code, out, err = install(run, fake)

    assert (code, err) == (0, '')
    assert len(managed_dashboards(fake)) == 1
    assert len(fake.monitors) == len(MONITOR_FILES)
    assert {m['name'] for m in fake.monitors.values()} == {
        json.loads(p.read_text())['definition']['name'] for p in MONITOR_FILES
    }
    (pipeline,) = fake.custom_pipelines()
    assert pipeline['name'] == PIPELINE_NAME and pipeline['filter'] == {'query': 'source:gunicorn'}
    # What is not ours is left as it was.
    assert fake.dashboards[user_dashboard]['description'] == 'a copy someone made by hand'
    assert fake.pipelines[integration_pipeline]['processors'] == []
    assert not [r for r in fake.writes if r.path.endswith((user_dashboard, integration_pipeline))]
    assert 'created' in out and 'Saved views have no public API' in out


def test_second_install_updates_and_never_duplicates(run, fake):
    assert install(run, fake)[0] == 0
    ids = (set(fake.dashboards), set(fake.monitors), set(fake.pipelines))
    first_writes = len(fake.writes)

    code, out, err = install(run, fake)

    assert (code, err) == (0, '')
    assert (set(fake.dashboards), set(fake.monitors), set(fake.pipelines)) == ids
    second = fake.writes[first_writes:]
    assert len(second) == first_writes and {r.method for r in second} == {'PUT'}
    assert 'created' not in out and out.count('updated') == first_writes


def test_a_changed_asset_is_updated_in_place_even_when_renamed(run, fake, tmp_path, monkeypatch):
    root = tmp_path / 'assets'
    shutil.copytree(REPO / 'assets', root)
    monkeypatch.setattr(asset_files, 'find_assets_dir', lambda: root)
    assert install(run, fake)[0] == 0
    monitor_file = root / 'monitors' / 'backlog.json'
    content = json.loads(monitor_file.read_text())
    content['definition']['name'] = '[Gunicorn] Renamed in a new release on {{host.name}}'
    content['definition']['query'] = content['definition']['query'].replace('> 10', '> 20')
    content['definition']['options']['thresholds']['critical'] = 20
    monitor_file.write_text(json.dumps(content))
    dashboard_file = root / 'dashboards' / 'gunicorn_overview.json'
    dashboard = json.loads(dashboard_file.read_text())
    dashboard['title'] = 'Gunicorn - Overview, second edition'
    dashboard_file.write_text(json.dumps(dashboard))

    assert install(run, fake)[0] == 0

    assert len(fake.monitors) == len(MONITOR_FILES) and len(managed_dashboards(fake)) == 1
    (backlog,) = [m for m in fake.monitors.values() if asset_tag('backlog') in m['tags']]
    assert backlog['name'] == content['definition']['name'] and backlog['query'].endswith('> 20')
    assert managed_dashboards(fake)[0]['title'] == 'Gunicorn - Overview, second edition'


def test_dry_run_sends_no_write_and_says_what_it_would_do(run, fake):
    code, out, _ = install(run, fake, '--dry-run')
    assert code == 0 and fake.writes == []
    assert out.count('would create') == 1 + len(MONITOR_FILES) + 1
    assert 'Dry run: nothing was created or changed.' in out

    assert install(run, fake)[0] == 0
    writes = len(fake.writes)
    code, out, _ = install(run, fake, '--dry-run')
    assert code == 0 and len(fake.writes) == writes
    assert out.count('would update id') == 1 + len(MONITOR_FILES) + 1


def test_export_writes_one_body_per_asset_equal_to_what_install_sends(run, fake, tmp_path):
    code, out, err = run('export', str(tmp_path / 'bodies'), env={})  # no key needed, nothing sent
    assert (code, err) == (0, '')
    exported = sorted((tmp_path / 'bodies').glob('*.json'))
    assert len(exported) == 1 + len(MONITOR_FILES) + 1

    assert install(run, fake)[0] == 0

    sent = {}
    for request in fake.writes:
        kind = {'dashboard': 'dashboard', 'monitor': 'monitor', 'logs': 'pipeline'}[request.path.split('/')[3]]
        sent['%s-%s.json' % (kind, _asset_id_of(kind, request.body))] = request.body
    assert {path.name: json.loads(path.read_text()) for path in exported} == sent


def _asset_id_of(kind: str, body: dict) -> str:
    if kind == 'monitor':
        (tag,) = [t for t in body['tags'] if t.startswith(asset_bodies.ASSET_TAG_KEY + ':')]
        return tag.split(':', 1)[1]
    if kind == 'dashboard':
        return body['description'].rsplit(asset_bodies.ASSET_TAG_KEY + ':', 1)[1].rstrip(']')
    return 'gunicorn'


# Errors: one line on stderr and a non-zero exit.


@pytest.mark.parametrize(
    'env, named',
    [
        ({'DD_APP_KEY': APP_KEY}, 'DD_API_KEY is not set'),
        ({'DD_API_KEY': API_KEY, 'DD_APP_KEY': '  '}, 'DD_APP_KEY is not set'),
        ({}, 'DD_API_KEY and DD_APP_KEY are not set'),
    ],
)
def test_a_missing_key_is_named_and_nothing_is_sent(run, fake, env, named):
    code, out, err = install(run, fake, env=env)
    assert code == 1 and out == '' and fake.requests == []
    assert_one_error_line(err, named)


def test_a_rejected_api_key_names_the_site(run, fake):
    code, _, err = install(run, fake, env={'DD_API_KEY': 'x' * 32, 'DD_APP_KEY': APP_KEY})
    assert code == 1 and fake.writes == []
    assert_one_error_line(err, 'rejected DD_API_KEY (403)', '--api-url')


def test_403_on_a_write_names_the_permission_the_application_key_lacks(run, fake):
    fake.fail(403, method='POST', path_prefix='/api/v1/monitor', body={'errors': ['Forbidden']})
    code, _, err = install(run, fake)
    assert code == 1
    assert_one_error_line(err, 'POST /api/v1/monitor (403: Forbidden)', 'DD_APP_KEY', 'monitors_write')


def test_a_wrong_application_key_is_refused_with_one_line(run, fake):
    code, _, err = install(run, fake, env={'DD_API_KEY': API_KEY, 'DD_APP_KEY': 'y' * 40})
    assert code == 1
    assert_one_error_line(err, 'GET /api/v1/dashboard (403', 'DD_APP_KEY', 'dashboards_read')


def test_429_is_retried_as_the_rate_limit_headers_say_then_succeeds(run, fake):
    fake.rate_limit(times=2, reset=0, method='GET', path_prefix='/api/v1/dashboard')
    code, out, err = install(run, fake)
    assert (code, err) == (0, '')
    assert out.count('answered 429; retrying in 0.0 s') == 2
    assert len([r for r in fake.requests if r.method == 'GET' and r.path == '/api/v1/dashboard']) == 3


def test_429_gives_up_after_a_bounded_number_of_attempts(run, fake):
    fake.rate_limit(times=1000, reset=0, path_prefix='/api/v1/logs')
    code, _, err = install(run, fake)
    assert code == 1
    assert_one_error_line(err, 'rate limit (fake_limit) still reached', 'after %d attempts' % MAX_ATTEMPTS)
    assert len([r for r in fake.requests if r.path.startswith('/api/v1/logs')]) == MAX_ATTEMPTS


def test_429_asking_for_a_long_wait_gives_up_at_once(run, fake):
    fake.rate_limit(times=1000, retry_after=3600, path_prefix='/api/v1/validate')
    code, _, err = install(run, fake)
    assert code == 1 and len(fake.requests) == 1
    assert_one_error_line(err, 'answered 429 to GET /api/v1/validate and asks to wait 3600 s')


@pytest.mark.parametrize(
    'headers, expected',
    [
        ({'Retry-After': '2', 'X-RateLimit-Reset': '7'}, [2.0]),
        ({'X-RateLimit-Reset': '3'}, [3.0]),
        ({}, [0.5]),
        ({'Retry-After': 'Wed, 21 Oct 2015 07:28:00 GMT'}, [0.5]),
    ],
)
def test_the_wait_before_a_retry_follows_retry_after_then_the_reset_header(fake, headers, expected):
    fake.fail(429, times=1, headers=headers)
    waits: list[float] = []
    api = DatadogAPI(fake.url, API_KEY, APP_KEY, site='fake', backoff=0.5, sleep=waits.append)
    api.validate()
    assert waits == expected


def test_5xx_on_a_read_is_retried_then_reported_in_one_line(run, fake):
    fake.fail(503, times=1000, method='GET', path_prefix='/api/v1/monitor')
    code, _, err = install(run, fake)
    assert code == 1
    assert_one_error_line(err, 'answered 503 to GET /api/v1/monitor', '%d attempts' % MAX_ATTEMPTS)


def test_5xx_on_a_create_is_not_retried_since_it_may_have_created(run, fake):
    fake.fail(500, times=1000, method='POST', path_prefix='/api/v1/dashboard')
    code, _, err = install(run, fake)
    assert code == 1
    assert len([r for r in fake.requests if r.method == 'POST']) == 1
    assert_one_error_line(err, 'answered 500 to POST /api/v1/dashboard', 'after 1 attempt:')


def test_an_unreachable_site_is_one_line(run):
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more: connection refused.
    code, _, err = run('install', '--api-url', 'http://127.0.0.1:%d' % port)
    assert code == 1
    assert_one_error_line(err, 'cannot reach http://127.0.0.1:%d (connection refused)' % port, '--api-url')


def test_a_server_that_never_answers_times_out():
    with socket.socket() as silent:
        silent.bind(('127.0.0.1', 0))
        silent.listen(1)  # accepts connections in the kernel, never reads or answers
        api = DatadogAPI(
            'http://127.0.0.1:%d' % silent.getsockname()[1], API_KEY, APP_KEY, site='fake', timeout=(1.0, 0.3)
        )
        with pytest.raises(ApiError, match=r'no answer within 0.3 s'):
            api.validate()


def test_an_error_body_is_bounded_sanitised_and_never_echoes_a_key(run, fake):
    hostile = 'bad request %s \x1b[31m\nsecond line %s %s' % (API_KEY, APP_KEY, 'x' * 5000)
    fake.fail(400, method='POST', path_prefix='/api/v1/dashboard', body={'errors': [hostile]})
    code, _, err = install(run, fake)
    assert code == 1
    assert_one_error_line(err, 'Datadog rejected POST /api/v1/dashboard (400: bad request ***')
    assert API_KEY not in err and APP_KEY not in err and '\x1b' not in err and len(err) < 400


def test_a_reply_that_is_not_json_is_reported(fake):
    fake.fail(200, body=b'<html>a captive portal</html>')
    api = DatadogAPI(fake.url, API_KEY, APP_KEY, site='fake')
    with pytest.raises(ApiError, match='is not JSON: does DD_SITE or --api-url point at the Datadog API'):
        api.validate()


def test_an_html_error_page_is_not_echoed(run, fake):
    fake.fail(502, times=1000, body=b'<html><script>alert(1)</script>Bad gateway</html>')
    code, _, err = install(run, fake)
    assert code == 1
    assert_one_error_line(err, 'answered 502 to GET /api/v1/validate after %d attempts' % MAX_ATTEMPTS)
    assert '<' not in err


def test_a_rejected_api_key_names_dd_site_and_the_site():
    with FakeDatadogAPI() as fake:
        api = DatadogAPI(fake.url, 'z' * 32, APP_KEY, site='datadoghq.eu')
        with pytest.raises(ApiError, match=r'rejected DD_API_KEY \(403\).*DD_SITE \(now datadoghq.eu\)'):
            api.validate()


# The site and the endpoint.


@pytest.mark.parametrize('site', SITES)
def test_every_datadog_site_maps_to_its_api_host(site):
    assert datadog_api.api_url_for_site(site) == 'https://api.' + site


@pytest.mark.parametrize(
    'site, app',
    [
        ('datadoghq.com', 'https://app.datadoghq.com'),
        ('datadoghq.eu', 'https://app.datadoghq.eu'),
        ('ddog-gov.com', 'https://app.ddog-gov.com'),
        ('us3.datadoghq.com', 'https://us3.datadoghq.com'),
        ('ap2.datadoghq.com', 'https://ap2.datadoghq.com'),
        ('us2.ddog-gov.com', 'https://us2.ddog-gov.com'),
    ],
)
def test_the_web_app_address_of_each_site(site, app):
    assert datadog_api.app_url_for_site(site) == app


@pytest.mark.parametrize(
    'environ, base_url',
    [
        ({}, 'https://api.datadoghq.com'),
        ({'DD_SITE': 'datadoghq.eu'}, 'https://api.datadoghq.eu'),
        ({'DD_SITE': ' US5.datadoghq.com '}, 'https://api.us5.datadoghq.com'),
        ({'DD_SITE': 'ap2.datadoghq.com'}, 'https://api.ap2.datadoghq.com'),
    ],
)
def test_dd_site_picks_the_api_host(environ, base_url, capsys):
    console = assets.Console(())
    assert assets._endpoint(None, environ, console)[1] == base_url
    assert capsys.readouterr().out == ''


def test_a_site_this_version_does_not_know_is_used_with_a_note(capsys):
    assert (
        assets._endpoint(None, {'DD_SITE': 'eu2.datadoghq.eu'}, assets.Console(()))[1] == 'https://api.eu2.datadoghq.eu'
    )
    assert 'not a site this installer knows' in capsys.readouterr().out


@pytest.mark.parametrize(
    'site, hint',
    [
        ('app.datadoghq.com', 'use DD_SITE=datadoghq.com'),
        ('api.datadoghq.eu', 'use DD_SITE=datadoghq.eu'),
        ('https://app.datadoghq.com', 'is a URL'),
        ('not a site', 'is not a Datadog site'),
    ],
)
def test_a_web_address_or_nonsense_in_dd_site_is_refused_with_the_fix(run, site, hint):
    code, _, err = run('install', env={**KEYS_ENV, 'DD_SITE': site})
    assert code == 1
    assert_one_error_line(err, hint)


@pytest.mark.parametrize(
    'url, message',
    [
        ('api.datadoghq.com', 'starting with https://'),
        ('ftp://api.datadoghq.com', 'starting with https://'),
        ('http://proxy.example:8080', 'must use https://'),
        ('http://10.0.0.5', 'must use https://'),
    ],
)
def test_the_api_url_must_be_https_unless_it_is_loopback(run, url, message):
    code, _, err = run('install', '--api-url', url)
    assert code == 1
    assert_one_error_line(err, message)


def test_a_redirect_is_not_followed_with_the_keys(run, fake):
    with FakeDatadogAPI() as elsewhere:
        fake.fail(302, headers={'Location': elsewhere.url + '/api/v1/validate'})
        code, _, err = install(run, fake)
        assert elsewhere.requests == []
    assert code == 1
    assert_one_error_line(err, 'redirect (302)', 'does not follow')


# Keys never appear in any output.


def test_the_keys_never_appear_in_any_output(run, fake, tmp_path):
    outputs = [
        install(run, fake, '--dry-run'),
        install(run, fake),
        install(run, fake),
        run('export', str(tmp_path / 'out')),
        install(run, fake, env={'DD_API_KEY': API_KEY}),
        install(run, fake, env={'DD_API_KEY': API_KEY, 'DD_APP_KEY': APP_KEY[::-1]}),
        install(run, fake, env={'DD_API_KEY': API_KEY[::-1], 'DD_APP_KEY': APP_KEY}),
        run('install', '--api-url', 'http://127.0.0.1:1'),
        run('install', env={**KEYS_ENV, 'DD_SITE': 'https://%s.example' % API_KEY}),
    ]
    fake.rate_limit(times=1000)
    outputs.append(install(run, fake))
    fake.faults.clear()
    fake.fail(502, times=1000, body={'errors': ['upstream said %s and %s' % (API_KEY, APP_KEY)]})
    outputs.append(install(run, fake))
    for _, out, err in outputs:
        for key in (API_KEY, APP_KEY, API_KEY[::-1], APP_KEY[::-1]):
            assert key not in out and key not in err
    for path in (tmp_path / 'out').iterdir():
        assert API_KEY not in path.read_text() and APP_KEY not in path.read_text()


# The request bodies.


def test_every_body_carries_the_fields_the_api_requires():
    bodies = build_bodies(load_assets())
    kinds = [b.kind for b in bodies]
    assert kinds == ['dashboard'] + ['monitor'] * len(MONITOR_FILES) + ['pipeline']
    for body in bodies:
        if body.kind == 'dashboard':
            fake_datadog_api._valid_dashboard(body.body)
            assert {'title', 'widgets', 'layout_type'} <= set(body.body)
            assert 'tags' not in body.body  # dashboard tags are team names only
        elif body.kind == 'monitor':
            fake_datadog_api._valid_monitor(body.body, required=True)
            assert {'type', 'query', 'name', 'message'} <= set(body.body)
            assert MANAGED_BY in body.body['tags'] and 'integration:gunicorn' in body.body['tags']
        else:
            fake_datadog_api._valid_pipeline(body.body)
            assert body.body['filter'] == {'query': 'source:gunicorn'} and body.body['processors']
            assert all(p['is_enabled'] is True for p in body.body['processors'])


def test_the_pipeline_is_converted_field_by_field_to_the_api_names():
    pipeline = asset_bodies.pipeline_body(load_assets().pipeline).body
    processors: dict[str, dict] = {}
    for processor in pipeline['processors']:
        processors.setdefault(processor['type'], processor)  # the first of each type
    assert set(processors['grok-parser']['grok']) == {'support_rules', 'match_rules'}
    assert processors['lookup-processor']['lookup_table'][0] == 'Starting gunicorn,starting'
    assert processors['user-agent-parser']['is_encoded'] is False
    assert processors['category-processor']['categories'][0] == {
        'filter': {'query': '@http.status_code:[100 TO 299]'},
        'name': 'Info',
    }
    text = json.dumps(pipeline)
    for file_spelling in ('supportRules', 'matchRules', 'lookupTable', '"enabled"', '"encoded"'):
        assert file_spelling not in text


def _first(pipeline: dict, kind: str) -> dict:
    return next(p for p in pipeline['processors'] if p['type'] == kind)


@pytest.mark.parametrize(
    'change, message',
    [
        (lambda p: p['processors'].append({'type': 'mystery-processor', 'name': 'x'}), "'mystery-processor'"),
        (lambda p: p['processors'][0].update(isEnabledSoon=True), 'isEnabledSoon'),
        (lambda p: p['processors'][0].update(samples=['s'] * 6), 'more than 5 samples'),
        (lambda p: p['processors'][0]['grok'].update(matchRules=''), 'needs matchRules'),
        (lambda p: _first(p, 'lookup-processor').pop('lookupTable'), 'lacks lookup_table'),
        (lambda p: p['filter'].update(query='source:nginx'), "must be 'source:gunicorn'"),
    ],
)
def test_a_pipeline_asset_the_api_would_not_take_is_refused_before_sending(change, message):
    content = load_assets().pipeline.content
    change(content['pipeline'])
    with pytest.raises(AssetError, match=message):
        asset_bodies.pipeline_body(AssetFile('gunicorn', Path('gunicorn.yaml'), content))


def test_a_monitor_asset_without_a_query_is_refused_in_one_line(run, fake, tmp_path, monkeypatch):
    root = tmp_path / 'assets'
    shutil.copytree(REPO / 'assets', root)
    broken = root / 'monitors' / 'backlog.json'
    content = json.loads(broken.read_text())
    del content['definition']['query']
    broken.write_text(json.dumps(content))
    monkeypatch.setattr(asset_files, 'find_assets_dir', lambda: root)
    code, _, err = install(run, fake)
    assert code == 1 and fake.requests == []
    assert_one_error_line(err, 'backlog.json lacks query')


# Finding the asset files: a clone of the repository, or an installed wheel.


def test_from_a_clone_the_assets_are_the_repository_folder():
    assert asset_files.find_assets_dir() == REPO / 'assets'


def test_setup_py_ships_the_files_the_installer_reads():
    tree = ast.parse((REPO / 'setup.py').read_text())
    (shipped,) = [
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == 'SHIPPED_ASSETS' for t in node.targets)
    ]
    assert shipped == asset_files.SHIPPED


def test_the_built_wheel_carries_the_assets_and_an_installed_wheel_finds_them(tmp_path, fake):
    tree = tmp_path / 'src'
    shutil.copytree(
        REPO,
        tree,
        ignore=shutil.ignore_patterns('.git', '.cache', '.tox', 'build', 'dist', '*.egg-info', '__pycache__', 'tests'),
    )
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q']
    subprocess.run([*pip, 'wheel', '--no-deps', '-w', tmp_path / 'dist', tree], check=True, timeout=300)
    (wheel,) = (tmp_path / 'dist').glob('datadog_gunicorn-*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = 'datadog_checks/gunicorn/assets/'
    for path in ('dashboards/gunicorn_overview.json', 'logs/gunicorn.yaml', 'saved_views/gunicorn_5xx.json'):
        assert packaged + path in names
    assert {packaged + 'monitors/' + p.name for p in MONITOR_FILES} <= names
    assert not (REPO / 'datadog_checks' / 'gunicorn' / 'assets').exists()  # nothing copied into the source tree

    target = tmp_path / 'installed'
    subprocess.run([*pip, 'install', '--no-deps', '--target', target, wheel], check=True, timeout=300)
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    env = {'PYTHONPATH': str(target), 'PATH': '', **KEYS_ENV}
    found = subprocess.run(
        [
            sys.executable,
            '-c',
            'from datadog_checks.gunicorn.cli.assets import files; print(files.find_assets_dir())',
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert found.stdout.strip() == str(target / 'datadog_checks' / 'gunicorn' / 'assets'), found.stderr
    # And the installer runs from the installed wheel, end to end.
    result = _run_cli(['install', '--api-url', fake.url], elsewhere, env)
    assert result.returncode == 0, result.stderr
    assert len(fake.monitors) == len(MONITOR_FILES) and len(fake.custom_pipelines()) == 1


# The real command line.


def _run_cli(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, '-m', 'datadog_checks.gunicorn', 'assets', *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_end_to_end_the_command_line_installs_then_updates(fake, tmp_path):
    env = {'PATH': '', **KEYS_ENV}
    first = _run_cli(['install', '--api-url', fake.url], tmp_path, env)
    second = _run_cli(['install', '--api-url', fake.url], tmp_path, env)
    assert (first.returncode, first.stderr) == (0, '')
    assert (second.returncode, second.stderr) == (0, '')
    assert len(managed_dashboards(fake)) == 1 and len(fake.monitors) == len(MONITOR_FILES)
    assert len(fake.custom_pipelines()) == 1
    for output in (first.stdout, second.stdout, first.stderr, second.stderr):
        assert API_KEY not in output and APP_KEY not in output
    missing = _run_cli(['install', '--api-url', fake.url], tmp_path, {'PATH': ''})
    assert missing.returncode == 1 and missing.stdout == ''
    assert_one_error_line(missing.stderr, 'DD_API_KEY and DD_APP_KEY are not set')
