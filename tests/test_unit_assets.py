"""What Datadog's validators do not check in the dashboard, monitors, saved views and manifest.

`ddev validate dashboards|saved-views` (scripts/validate_ddev.py) only look at a few top-level fields, and the manifest
and monitors are validated by a Datadog web API these machines cannot reach. So here: every metric an asset names is in
metadata.csv (a widget on a metric nobody sends is an empty graph nobody notices), every file the manifest names
exists, monitors carry what Datadog's monitor API requires and their thresholds agree with their queries, and log
assets use the attributes the logs pipeline produces.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from datadog_checks.gunicorn import GunicornCheck

from .fakeproc import FakeProc
from .logs.grok import load_pipeline, query_matches

REPO = Path(__file__).resolve().parent.parent
MANIFEST = json.loads((REPO / 'manifest.json').read_text(encoding='utf-8'))
ASSETS = MANIFEST['assets']
with open(REPO / 'metadata.csv', newline='', encoding='utf-8') as _f:
    METADATA = {row['metric_name']: row for row in csv.DictReader(_f)}
SERVICE_CHECKS = {sc['check'] for sc in json.loads((REPO / 'assets' / 'service_checks.json').read_text())}
PIPELINE = REPO / 'assets' / 'logs' / 'gunicorn.yaml'

# A metric in a Datadog metric query is followed by its scope: `sum:gunicorn.workers{...}`.
METRIC_IN_QUERY = re.compile(r'\b(gunicorn(?:\.[A-Za-z0-9_]+)+)\s*\{')
STATUS_PREFIX = 'gunicorn.request.status.'


def load(relative: str) -> Any:
    return json.loads((REPO / relative).read_text(encoding='utf-8'))


def dashboards() -> dict[str, Any]:
    return {path: load(path) for path in ASSETS.get('dashboards', {}).values()}


def monitors() -> dict[str, Any]:
    return {path: load(path) for path in ASSETS.get('monitors', {}).values()}


def saved_views() -> dict[str, Any]:
    return {path: load(path) for path in ASSETS.get('saved_views', {}).values()}


def walk_widgets(widgets: list[dict]) -> Iterator[dict]:
    for widget in widgets:
        yield widget
        yield from walk_widgets(widget.get('definition', {}).get('widgets', []))


def metric_queries(dashboard: dict) -> Iterator[str]:
    for widget in walk_widgets(dashboard['widgets']):
        for request in widget['definition'].get('requests', []):
            for query in request.get('queries', []):
                if query.get('data_source') == 'metrics':
                    yield query['query']
            if 'q' in request:  # the older request format, should anyone paste one in
                yield request['q']


def log_queries(dashboard: dict) -> Iterator[str]:
    for widget in walk_widgets(dashboard['widgets']):
        definition = widget['definition']
        if definition['type'] == 'log_stream':
            yield definition['query']
        for request in definition.get('requests', []):
            for query in request.get('queries', []):
                if query.get('data_source') == 'logs':
                    yield query['search']['query']


def monitor_log_queries() -> Iterator[str]:
    for monitor in monitors().values():
        if monitor['definition']['type'] == 'log alert':
            yield re.match(r'logs\("(.*?)"\)', monitor['definition']['query']).group(1)


def every_log_query() -> list[str]:
    queries = [q for d in dashboards().values() for q in log_queries(d)]
    queries += list(monitor_log_queries())
    queries += [v['query'] for v in saved_views().values() if v['type'] == 'logs']
    return queries


# Manifest


def test_every_file_the_manifest_names_exists():
    integration = ASSETS['integration']
    named = [
        integration['configuration']['spec'],
        integration['metrics']['metadata_path'],
        integration['service_checks']['metadata_path'],
        MANIFEST['tile']['changelog'],
        *ASSETS.get('dashboards', {}).values(),
        *ASSETS.get('monitors', {}).values(),
        *ASSETS.get('saved_views', {}).values(),
    ]
    missing = [path for path in named if not (REPO / path).is_file()]
    assert not missing, 'the manifest names files that do not exist: %s' % missing


def test_every_asset_file_is_in_the_manifest():
    # A JSON file dropped into assets/ but not listed in the manifest is never installed by Datadog.
    listed = {*ASSETS.get('dashboards', {}).values(), *ASSETS.get('monitors', {}).values()}
    listed |= set(ASSETS.get('saved_views', {}).values())
    on_disk = {
        p.relative_to(REPO).as_posix()
        for folder in ('dashboards', 'monitors', 'saved_views')
        for p in (REPO / 'assets' / folder).glob('*.json')
    }
    assert on_disk - listed == set()


def test_tile_anchors_point_at_readme_sections():
    headings = {
        line.lstrip('#').strip().lower()
        for line in (REPO / 'README.md').read_text().splitlines()
        if line.startswith('##')
    }
    for key in ('overview', 'configuration'):
        path, anchor = MANIFEST['tile'][key].split('#')
        assert path == 'README.md' and anchor.lower() in headings, MANIFEST['tile'][key]


def test_asset_names_match_their_files():
    # Datadog shows the manifest keys as the names of the installed assets: they should say what users see.
    for title, path in ASSETS['dashboards'].items():
        assert load(path)['title'] == title
    for title, path in ASSETS['monitors'].items():
        assert load(path)['title'] == title
    for key, path in ASSETS['saved_views'].items():
        assert Path(path).stem == key


def test_the_manifest_check_metric_is_the_checks_own(tmp_path, dd_run_check, aggregator, datadog_agent):
    """`metrics.check` is the metric whose arrival tells Datadog the integration works.

    `gunicorn.workers` is what Datadog's own gunicorn manifest uses, so tiles and monitors keyed on it keep working.
    The check sends it on every run that finds the application's master, and sends no metric at all when it finds
    none (then only `gunicorn.is_running` goes out, CRITICAL): no metric is sent on every run, and one that were
    would tell Datadog the integration works while it watches nothing. Gunicorn's StatsD also sends this name, but
    only when its worker count changes.
    """
    check_metric = ASSETS['integration']['metrics']['check']
    assert check_metric == 'gunicorn.workers'
    assert METADATA[check_metric]['metric_type'] == 'gauge'

    fake = FakeProc(tmp_path / 'proc')
    fake.add(100, 1, 'gunicorn: master [web]', children=(101, 102))
    fake.add(101, 100, 'gunicorn: worker [web]')
    fake.add(102, 100, 'gunicorn: worker [web]')
    datadog_agent._config['procfs_path'] = str(fake.root)
    instance = {'proc_name': 'web', 'gunicorn': str(tmp_path / 'no-such-gunicorn'), 'cpu_sample_interval': 0.01}
    dd_run_check(GunicornCheck('gunicorn', {}, [instance]))
    assert check_metric in aggregator.metric_names

    aggregator.reset()
    dd_run_check(GunicornCheck('gunicorn', {}, [{**instance, 'proc_name': 'absent'}]))
    assert aggregator.metric_names == []


# Metrics named by assets


def test_every_metric_a_dashboard_graphs_is_in_metadata():
    for path, dashboard in dashboards().items():
        named = {m for q in metric_queries(dashboard) for m in METRIC_IN_QUERY.findall(q)}
        assert named, '%s: no metric found; does the query pattern still match?' % path
        assert named - METADATA.keys() == set(), path


def test_no_metric_hides_outside_a_metric_query():
    # A safety net for widget kinds the walker above does not know: any `gunicorn.x{` anywhere in an asset.
    for path in [*ASSETS['dashboards'].values(), *ASSETS['monitors'].values(), *ASSETS['saved_views'].values()]:
        named = set(METRIC_IN_QUERY.findall((REPO / path).read_text()))
        assert named - METADATA.keys() == set(), path


def test_every_metric_a_monitor_watches_is_in_metadata():
    for path, monitor in monitors().items():
        definition = monitor['definition']
        if definition['type'] in ('query alert', 'metric alert'):
            named = set(METRIC_IN_QUERY.findall(definition['query']))
            assert named and named - METADATA.keys() == set(), path
        elif definition['type'] == 'service check':
            name = re.match(r'"([^"]+)"', definition['query']).group(1)
            assert name in SERVICE_CHECKS, path


def test_service_check_widgets_name_a_service_check():
    for dashboard in dashboards().values():
        for widget in walk_widgets(dashboard['widgets']):
            if widget['definition']['type'] == 'check_status':
                assert widget['definition']['check'] in SERVICE_CHECKS


def test_every_status_code_is_graphed_in_its_class():
    """Every `gunicorn.request.status.<code>` in metadata.csv is on the dashboard, in the widget for its class."""
    codes = {m[len(STATUS_PREFIX) :] for m in METADATA if m.startswith(STATUS_PREFIX)}
    (dashboard,) = dashboards().values()
    by_class: dict[str, set[str]] = {}
    for widget in walk_widgets(dashboard['widgets']):
        definition = widget['definition']
        match = re.search(r'\((\d)xx\), by code', definition.get('title', ''))
        if match:
            text = json.dumps(definition)
            by_class[match.group(1)] = {c for c in codes if '%s%s{' % (STATUS_PREFIX, c) in text}
    assert sorted(by_class) == sorted({c[0] for c in codes})
    for klass, graphed in by_class.items():
        assert graphed == {c for c in codes if c.startswith(klass)}, klass


# Dashboards


def test_dashboards_have_what_datadog_requires():
    for path, dashboard in dashboards().items():
        assert dashboard['layout_type'] in ('ordered', 'free'), path
        assert dashboard['title'] and dashboard['description'], path
        assert {v['name']: v['prefix'] for v in dashboard['template_variables']} == {'host': 'host', 'app': 'app'}
        ids = [w['id'] for w in walk_widgets(dashboard['widgets'])]
        assert len(ids) == len(set(ids)), '%s: widget ids must be unique' % path
        for widget in walk_widgets(dashboard['widgets']):
            definition = widget['definition']
            assert definition.get('type'), widget['id']
            # Ordered dashboards keep their arrangement only when every widget has a layout.
            assert {'x', 'y', 'width', 'height'} <= widget.get('layout', {}).keys(), widget['id']
            for request in definition.get('requests', []):
                names = {q['name'] for q in request.get('queries', [])}
                for formula in request.get('formulas', []):
                    used = set(re.findall(r'[A-Za-z_]\w*', formula['formula']))
                    assert used <= names, '%s: formula %r uses unknown queries' % (widget['id'], formula['formula'])


def test_template_variables_filter_every_query():
    # A widget that ignores $host/$app shows every host's data while the reader believes it is filtered.
    for dashboard in dashboards().values():
        for query in [*metric_queries(dashboard), *log_queries(dashboard)]:
            assert '$host' in query and '$app' in query, query


def test_widgets_fit_the_grid():
    # Ordered dashboards are 12 columns wide; inside a group, widgets that overlap or spill over its height are
    # rearranged by Datadog on import, and the reading order top to bottom is lost.
    for dashboard in dashboards().values():
        for widget in walk_widgets(dashboard['widgets']):
            layout = widget['layout']
            assert layout['x'] + layout['width'] <= 12, widget['id']
        for group in dashboard['widgets']:
            taken: dict[tuple[int, int], int] = {}
            for widget in group['definition'].get('widgets', []):
                layout = widget['layout']
                assert layout['y'] + layout['height'] <= group['layout']['height'], widget['id']
                for x in range(layout['x'], layout['x'] + layout['width']):
                    for y in range(layout['y'], layout['y'] + layout['height']):
                        assert (x, y) not in taken, 'widgets %s and %s overlap' % (taken[(x, y)], widget['id'])
                        taken[(x, y)] = widget['id']


# Monitors

MONITOR_TYPES = {'query alert', 'metric alert', 'service check', 'log alert', 'process alert', 'event-v2 alert'}
THRESHOLD = re.compile(r'\s*(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$')


def test_monitors_have_what_datadog_requires():
    for path, monitor in monitors().items():
        assert monitor['version'] == 2, path
        for field in ('created_at', 'last_updated_at'):
            assert re.fullmatch(r'\d{4}-\d{2}-\d{2}', monitor[field]), path
        assert monitor['title'] and monitor['description'], path
        assert 'integration:gunicorn' in monitor['tags'], path
        definition = monitor['definition']
        assert definition['type'] in MONITOR_TYPES, path
        assert definition['name'].startswith('[Gunicorn] '), path
        assert 'integration:gunicorn' in definition['tags'], path
        assert definition['query'] and definition['message'], path
        assert 'critical' in definition['options']['thresholds'], path


def test_monitor_thresholds_agree_with_their_queries():
    """Datadog's monitor API refuses a query alert whose threshold differs from options.thresholds.critical."""
    for path, monitor in monitors().items():
        definition = monitor['definition']
        thresholds = definition['options']['thresholds']
        if definition['type'] == 'service check':
            consecutive = int(re.search(r'\.last\((\d+)\)', definition['query']).group(1))
            assert max(thresholds.values()) <= consecutive, path
            continue
        comparator, value = THRESHOLD.search(definition['query']).groups()
        assert float(value) == thresholds['critical'], path
        if 'warning' in thresholds:
            # The warning comes before the critical in the direction the monitor fires.
            if comparator.startswith('>'):
                assert thresholds['warning'] < thresholds['critical'], path
            else:
                assert thresholds['warning'] > thresholds['critical'], path


def test_monitor_messages_say_what_to_check_first():
    for path, monitor in monitors().items():
        message = monitor['definition']['message']
        assert '## What to check first' in message, path
        assert '{{#is_alert}}' in message and '{{#is_recovery}}' in message, path
        steps = re.findall(r'(?m)^\d+\. ', message.split('## What to check first', 1)[1])
        assert len(steps) >= 2, path
        if 'warning' in monitor['definition']['options']['thresholds'] and monitor['definition']['type'] != (
            'service check'
        ):
            assert '{{#is_warning}}' in message, path


def test_monitors_group_by_what_the_message_names():
    # {{host.name}} or {{app.name}} in a message is empty unless the monitor groups by that tag.
    for path, monitor in monitors().items():
        definition = monitor['definition']
        for variable in set(re.findall(r'\{\{(\w+)\.name\}\}', definition['message'] + definition['name'])):
            assert re.search(r'\b%s\b' % variable, definition['query'].split(')', 1)[-1] + definition['query']), (
                path,
                variable,
            )


# Saved views and logs


def test_saved_views_cover_what_on_call_looks_for():
    views = saved_views().values()
    queries = ' '.join(v['query'] for v in views if v['type'] == 'logs')
    for needle in ('[500 TO 599]', '[400 TO 499]', 'worker_timeout', 'worker_booted'):
        assert needle in queries
    assert [v['page'] for v in views if v['type'] == 'process'] == ['process_overview']


def test_log_queries_are_scoped_to_gunicorn_logs():
    for query in every_log_query():
        assert query.startswith('source:gunicorn'), query


def asset_log_attributes() -> set[str]:
    """Every `@attribute` a log asset filters on, shows as a column or lists as a facet."""
    used = {a for q in every_log_query() for a in re.findall(r'@([\w.]+):', q)}
    columns = [c for v in saved_views().values() if v['type'] == 'logs' for c in v['options'].get('columns', [])]
    columns += [c for v in saved_views().values() if v['type'] == 'logs' for c in v.get('visible_facets', [])]
    for dashboard in dashboards().values():
        for widget in walk_widgets(dashboard['widgets']):
            if widget['definition']['type'] == 'log_stream':
                columns += widget['definition'].get('columns', [])
    return used | {c[1:] for c in columns if c.startswith('@')}


def pipeline_attributes(pipeline: dict) -> set[str]:
    """What the pipeline writes: grok captures, processor targets, and the facets it declares."""
    produced = {f['path'] for f in pipeline.get('facets', [])}
    for processor in pipeline['pipeline']['processors']:
        if processor.get('target'):
            produced.add(processor['target'])
        grok = processor.get('grok', {})
        rules = grok.get('supportRules', '') + grok.get('matchRules', '')
        produced |= set(re.findall(r'%\{[^:}]+:([\w.]+)', rules))
    return produced


@pytest.mark.skipif(not PIPELINE.exists(), reason='the logs pipeline (assets/logs/gunicorn.yaml) is not in the repo')
def test_log_assets_use_what_the_pipeline_produces():
    pipeline = yaml.safe_load(PIPELINE.read_text(encoding='utf-8'))
    events = set()
    for processor in pipeline['pipeline']['processors']:
        if processor.get('type') == 'lookup-processor' and processor.get('target') == 'gunicorn.event':
            events |= {line.rsplit(',', 1)[1].strip() for line in processor['lookupTable']}
    assert events, 'no lookup processor targets gunicorn.event'
    for query in every_log_query():
        for group in re.findall(r'@gunicorn\.event:\(([^)]*)\)|@gunicorn\.event:(\w+)', query):
            for value in re.findall(r'\w+', ' '.join(group)):
                if value != 'OR':
                    assert value in events, (query, value)
    produced = pipeline_attributes(pipeline)
    # An attribute is there when the pipeline writes it or an object holding it (http.url_details -> .path).
    unknown = {a for a in asset_log_attributes() if not any(a == p or a.startswith(p + '.') for p in produced)}
    assert not unknown, 'log assets use attributes the pipeline never writes: %s' % sorted(unknown)


@pytest.mark.skipif(not PIPELINE.exists(), reason='the logs pipeline (assets/logs/gunicorn.yaml) is not in the repo')
def test_saved_views_list_facets_the_pipeline_declares():
    # A facet the integration does not declare shows up empty in the facet panel of a fresh account.
    declared = {f['path'] for f in yaml.safe_load(PIPELINE.read_text(encoding='utf-8')).get('facets', [])}
    for view in saved_views().values():
        for facet in view.get('visible_facets', []):
            if facet.startswith('@'):
                assert facet[1:] in declared, (view['name'], facet)


def test_request_queries_count_the_access_lines_of_every_worker_class():
    """The access-log request panels and the 5xx monitor filter on @http.status_code, which the pipeline sets from
    Gunicorn's access format and from uvicorn's alike: the same 503 (real lines of sync and of uvicorn's worker) must
    be counted by every such filter, or by none."""
    pipeline = load_pipeline()
    lines = (
        '127.0.0.1 - - [24/Nov/2026:23:00:04 +0000] "GET /status/503 HTTP/1.1" 503 21 "-" "-"',
        '127.0.0.1:60474 - "DELETE /status/503 HTTP/1.0" 503',
    )
    attributes = [pipeline.process(line).attributes for line in lines]
    terms = {t for q in every_log_query() for t in re.findall(r'@http\.status_code:(?:\[\d+ TO \d+\]|\*)', q)}
    assert '@http.status_code:*' in terms and '@http.status_code:[500 TO 599]' in terms
    for term in terms:
        assert query_matches(term, attributes[0]) == query_matches(term, attributes[1]), term
    [monitor] = [m for m in monitors().values() if '@http.status_code' in m['definition']['query']]
    assert all(query_matches('@http.status_code:[500 TO 599]', a) for a in attributes)
    assert monitor['definition']['type'] == 'log alert' and '.by("app")' in monitor['definition']['query']
