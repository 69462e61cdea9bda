"""A loopback fake of the part of Datadog's API that the assets installer uses, for tests that cannot reach Datadog.

An `http.server` on 127.0.0.1 in a thread. It stores what it is sent, assigns ids, pages its lists, and answers with
the shapes of Datadog's API reference; it can be told to answer 403, 429 (with rate-limit headers) or 5xx.

Where each rule comes from:
- Endpoints, parameters and response shapes: docs.datadoghq.com/api/latest/authentication (GET /api/v1/validate,
  `{"valid": true}`, 403 for a bad API key - the application key is not checked there), .../dashboards (GET
  /api/v1/dashboard -> `{"dashboards": [summary...]}` with `count`/`start` paging; POST; GET/PUT
  /api/v1/dashboard/{id}), .../monitors (GET /api/v1/monitor -> `[monitor...]` with `monitor_tags`, `name`, `page`,
  `page_size`; POST; GET/PUT /api/v1/monitor/{id}), .../logs-pipelines (GET/POST /api/v1/logs/config/pipelines,
  GET/PUT /api/v1/logs/config/pipelines/{id}).
- Required fields, enums and writable fields: the OpenAPI spec behind that reference
  (DataDog/datadog-api-client-python, .generator/schemas/v1/openapi.yaml): Dashboard requires layout_type, title,
  widgets, layout_type in (ordered, free), reflow_type in (auto, fixed), and its `tags` are "team names representing
  ownership" (so only `team:` tags are accepted here); Monitor requires type and query; LogsPipeline requires name;
  each Logs*Processor requires the fields listed in PROCESSOR_FIELDS below, and LogsGrokParser.samples holds at most 5
  samples of at most 5000 characters. lookup_table entries are "<SOURCE>,<VALUE>".
- Errors: 4xx/5xx bodies are `{"errors": ["..."]}` (APIErrorResponse); authentication by the DD-API-KEY and
  DD-APPLICATION-KEY headers; 429 carries X-RateLimit-Limit, -Period, -Remaining, -Reset, -Name
  (docs.datadoghq.com/api/latest/rate-limits).
Deliberately stricter than the reference says: a request field that the spec does not list for that object (or that
processor type) is rejected, so a misspelt or unconverted field name fails a test instead of being dropped silently.
Not from the reference (assumptions): a PUT to a read-only (integration) pipeline answers 400; `monitor_tags` with
several tags matches monitors carrying all of them.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_KEY = 'fakeapikey0123456789abcdef0123456'
APP_KEY = 'fakeappkey0123456789abcdef0123456789abcd'

DASHBOARD_FIELDS = {
    'author_handle',
    'author_name',
    'created_at',
    'description',
    'id',
    'is_read_only',
    'layout_type',
    'modified_at',
    'notify_list',
    'reflow_type',
    'restricted_roles',
    'tags',
    'template_variable_presets',
    'template_variables',
    'title',
    'url',
    'widgets',
}
MONITOR_FIELDS = {
    'created',
    'creator',
    'deleted',
    'draft_status',
    'id',
    'matching_downtimes',
    'message',
    'modified',
    'multi',
    'name',
    'options',
    'overall_state',
    'priority',
    'query',
    'restricted_roles',
    'state',
    'tags',
    'type',
}
MONITOR_TYPES = {
    'composite',
    'event alert',
    'log alert',
    'metric alert',
    'process alert',
    'query alert',
    'rum alert',
    'service check',
    'synthetics alert',
    'trace-analytics alert',
    'slo alert',
    'event-v2 alert',
    'audit alert',
    'ci-pipelines alert',
    'ci-tests alert',
    'error-tracking alert',
    'database-monitoring alert',
    'network-performance alert',
    'cost alert',
}
PIPELINE_FIELDS = {'description', 'filter', 'id', 'is_enabled', 'is_read_only', 'name', 'processors', 'tags', 'type'}
# Processor type -> (required fields, other allowed fields); `type`, `name` and `is_enabled` are allowed for all.
PROCESSOR_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    'grok-parser': ({'source', 'grok'}, {'samples'}),
    'date-remapper': ({'sources'}, set()),
    'status-remapper': ({'sources'}, set()),
    'service-remapper': ({'sources'}, set()),
    'message-remapper': ({'sources'}, set()),
    'attribute-remapper': (
        {'sources', 'target'},
        {'override_on_conflict', 'preserve_source', 'source_type', 'target_format', 'target_type'},
    ),
    'url-parser': ({'sources', 'target'}, {'normalize_ending_slashes'}),
    'user-agent-parser': ({'sources', 'target'}, {'is_encoded'}),
    'category-processor': ({'categories', 'target'}, set()),
    'string-builder-processor': ({'target', 'template'}, {'is_replace_missing'}),
    'geo-ip-parser': ({'sources', 'target'}, set()),
    'lookup-processor': ({'source', 'target', 'lookup_table'}, {'default_lookup'}),
    'trace-id-remapper': (set(), {'sources'}),
    'span-id-remapper': (set(), {'sources'}),
    'pipeline': (set(), {'filter', 'processors'}),
}


class Rejected(Exception):
    def __init__(self, status: int, *errors: str) -> None:
        super().__init__(errors)
        self.status = status
        self.errors = list(errors)


@dataclass
class Fault:
    """An answer forced on the next `times` matching requests, before any other handling."""

    status: int
    times: int
    method: str | None = None
    path_prefix: str = ''
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # JSON-encoded; bytes are sent as they are, as text/html (a proxy's or load balancer's page)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    api_key: str | None
    app_key: str | None


class FakeDatadogAPI:
    def __init__(self, api_key: str = API_KEY, app_key: str = APP_KEY) -> None:
        self.api_key = api_key
        self.app_key = app_key
        self.dashboards: dict[str, dict] = {}
        self.monitors: dict[int, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(('127.0.0.1', 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name='fake-datadog-api', daemon=True)

    @property
    def url(self) -> str:
        return 'http://127.0.0.1:%d' % self._server.server_address[1]

    def __enter__(self) -> FakeDatadogAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # What tests set up and inspect.

    def fail(self, status: int, times: int = 1, **kwargs: Any) -> None:
        self.faults.append(Fault(status, times, **kwargs))

    def rate_limit(self, times: int, reset: int = 0, retry_after: int | None = None, **kwargs: Any) -> None:
        headers = {
            'X-RateLimit-Limit': '100',
            'X-RateLimit-Period': '60',
            'X-RateLimit-Remaining': '0',
            'X-RateLimit-Reset': str(reset),
            'X-RateLimit-Name': 'fake_limit',
        }
        if retry_after is not None:
            headers['Retry-After'] = str(retry_after)
        self.fail(429, times, headers=headers, body={'errors': ['Rate limit exceeded']}, **kwargs)

    def add_integration_pipeline(self) -> str:
        """Datadog's own pipeline for source:gunicorn, read-only, as an account that sends Gunicorn logs has it."""
        pipeline_id = 'integration-gunicorn'
        self.pipelines[pipeline_id] = {
            'id': pipeline_id,
            'type': 'pipeline',
            'name': 'Gunicorn',
            'is_enabled': True,
            'is_read_only': True,
            'filter': {'query': 'source:gunicorn'},
            'processors': [],
        }
        return pipeline_id

    def add_dashboard(self, title: str, description: str = '') -> str:
        body = {'title': title, 'description': description, 'layout_type': 'ordered', 'widgets': []}
        return self._store_dashboard(body)['id']

    @property
    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method in ('POST', 'PUT', 'PATCH', 'DELETE')]

    def custom_pipelines(self) -> list[dict]:
        return [p for p in self.pipelines.values() if not p.get('is_read_only')]

    # Request handling.

    def handle(self, request: Request) -> tuple[int, dict[str, str], Any]:
        with self._lock:
            self.requests.append(request)
            fault = self._take_fault(request)
            if fault is not None:
                return fault.status, fault.headers, fault.body if fault.body is not None else {'errors': ['Fault']}
            try:
                self._authenticate(request)
                return 200, {}, self._route(request)
            except Rejected as exc:
                return exc.status, {}, {'errors': exc.errors}

    def _take_fault(self, request: Request) -> Fault | None:
        for fault in self.faults:
            if (
                fault.times > 0
                and fault.method in (None, request.method)
                and request.path.startswith(fault.path_prefix)
            ):
                fault.times -= 1
                return fault
        return None

    def _authenticate(self, request: Request) -> None:
        if request.api_key != self.api_key:
            raise Rejected(403, 'Forbidden')
        if request.path != '/api/v1/validate' and request.app_key != self.app_key:
            raise Rejected(403, 'Forbidden')

    def _route(self, request: Request) -> Any:
        method, parts = request.method, request.path.strip('/').split('/')
        if parts[:2] != ['api', 'v1']:
            raise Rejected(404, 'Not found')
        resource = parts[2:]
        if resource == ['validate'] and method == 'GET':
            return {'valid': True}
        if resource[:1] == ['dashboard']:
            return self._dashboards(method, resource[1:], request)
        if resource[:1] == ['monitor']:
            return self._monitors(method, resource[1:], request)
        if resource[:3] == ['logs', 'config', 'pipelines']:
            return self._pipelines(method, resource[3:], request)
        raise Rejected(404, 'Not found: %s %s' % (method, request.path))

    # Dashboards.

    def _dashboards(self, method: str, rest: list[str], request: Request) -> Any:
        if not rest and method == 'GET':
            start, count = _int_param(request, 'start', 0), _int_param(request, 'count', 0)
            summaries = [_dashboard_summary(d) for d in self.dashboards.values()]
            return {'dashboards': summaries[start : start + count] if count else summaries[start:]}
        if not rest and method == 'POST':
            return self._store_dashboard(_valid_dashboard(request.body))
        if len(rest) == 1 and rest[0] in self.dashboards:
            if method == 'GET':
                return copy.deepcopy(self.dashboards[rest[0]])
            if method == 'PUT':
                return self._store_dashboard(_valid_dashboard(request.body), rest[0])
        raise Rejected(404, 'Dashboard not found')

    def _store_dashboard(self, body: dict, dashboard_id: str | None = None) -> dict:
        number = next(self._ids)
        dashboard_id = dashboard_id or 'abc-%03d-xyz' % number
        stored = {k: v for k, v in copy.deepcopy(body).items() if k not in ('id', 'url', 'author_handle')}
        stored.update(id=dashboard_id, url='/dashboard/%s/%s' % (dashboard_id, 'slug'), author_handle='fake@example')
        self.dashboards[dashboard_id] = stored
        return copy.deepcopy(stored)

    # Monitors.

    def _monitors(self, method: str, rest: list[str], request: Request) -> Any:
        if not rest and method == 'GET':
            wanted = [t for t in ','.join(request.query.get('monitor_tags', [])).split(',') if t]
            name = ''.join(request.query.get('name', []))
            found = [
                copy.deepcopy(m)
                for m in self.monitors.values()
                if all(t in m.get('tags', []) for t in wanted) and name in m.get('name', '')
            ]
            if 'page' in request.query:
                size = _int_param(request, 'page_size', 100)
                page = _int_param(request, 'page', 0)
                return found[page * size : (page + 1) * size]
            return found
        if not rest and method == 'POST':
            monitor_id = next(self._ids)
            self.monitors[monitor_id] = {**_valid_monitor(request.body, required=True), 'id': monitor_id}
            return copy.deepcopy(self.monitors[monitor_id])
        if len(rest) == 1 and rest[0].isdigit() and int(rest[0]) in self.monitors:
            monitor_id = int(rest[0])
            if method == 'GET':
                return copy.deepcopy(self.monitors[monitor_id])
            if method == 'PUT':
                update = _valid_monitor(request.body, required=False)
                self.monitors[monitor_id] = {**self.monitors[monitor_id], **update, 'id': monitor_id}
                return copy.deepcopy(self.monitors[monitor_id])
        raise Rejected(404, 'Monitor not found')

    # Logs pipelines.

    def _pipelines(self, method: str, rest: list[str], request: Request) -> Any:
        if not rest and method == 'GET':
            return [copy.deepcopy(p) for p in self.pipelines.values()]
        if not rest and method == 'POST':
            pipeline_id = 'pipeline-%d' % next(self._ids)
            return self._store_pipeline(pipeline_id, _valid_pipeline(request.body))
        if len(rest) == 1 and rest[0] in self.pipelines:
            if method == 'GET':
                return copy.deepcopy(self.pipelines[rest[0]])
            if method == 'PUT':
                if self.pipelines[rest[0]].get('is_read_only'):
                    raise Rejected(400, 'This pipeline is read-only')
                return self._store_pipeline(rest[0], _valid_pipeline(request.body))
        raise Rejected(404, 'Pipeline not found')

    def _store_pipeline(self, pipeline_id: str, body: dict) -> dict:
        stored = {k: v for k, v in copy.deepcopy(body).items() if k not in ('id', 'type', 'is_read_only')}
        stored.update(id=pipeline_id, type='pipeline', is_read_only=False)
        self.pipelines[pipeline_id] = stored
        return copy.deepcopy(stored)


# Validation of request bodies, following the reference (see the module docstring).


def _valid_dashboard(body: Any) -> dict:
    body = _object(body, 'dashboard')
    _known(body, DASHBOARD_FIELDS, 'dashboard')
    _required(body, ('layout_type', 'title', 'widgets'), 'dashboard')
    if body['layout_type'] not in ('ordered', 'free'):
        raise Rejected(400, 'layout_type must be ordered or free')
    if body.get('reflow_type') not in (None, 'auto', 'fixed'):
        raise Rejected(400, 'reflow_type must be auto or fixed')
    if not isinstance(body['widgets'], list) or not all(
        isinstance(w, dict) and isinstance(w.get('definition'), dict) and w['definition'].get('type')
        for w in body['widgets']
    ):
        raise Rejected(400, 'every widget needs a definition with a type')
    if any(not str(tag).startswith('team:') for tag in body.get('tags') or []):
        raise Rejected(400, 'dashboard tags must be team names (team:<handle>)')
    return body


def _valid_monitor(body: Any, required: bool) -> dict:
    body = _object(body, 'monitor')
    _known(body, MONITOR_FIELDS, 'monitor')
    if required:
        _required(body, ('type', 'query'), 'monitor')
    if 'type' in body and body['type'] not in MONITOR_TYPES:
        raise Rejected(400, 'invalid monitor type %r' % body['type'])
    if not isinstance(body.get('tags', []), list) or not all(isinstance(t, str) for t in body.get('tags', [])):
        raise Rejected(400, 'tags must be a list of strings')
    return body


def _valid_pipeline(body: Any) -> dict:
    body = _object(body, 'pipeline')
    _known(body, PIPELINE_FIELDS, 'pipeline')
    _required(body, ('name',), 'pipeline')
    if 'filter' in body and not isinstance(_object(body['filter'], 'filter').get('query', ''), str):
        raise Rejected(400, 'filter.query must be a string')
    for index, processor in enumerate(body.get('processors') or []):
        _valid_processor(processor, 'processors[%d]' % index)
    return body


def _valid_processor(processor: Any, where: str) -> None:
    processor = _object(processor, where)
    kind = processor.get('type')
    if kind not in PROCESSOR_FIELDS:
        raise Rejected(400, '%s: unknown processor type %r' % (where, kind))
    required, optional = PROCESSOR_FIELDS[kind]
    _known(processor, required | optional | {'type', 'name', 'is_enabled'}, '%s (%s)' % (where, kind))
    _required(processor, tuple(sorted(required)), '%s (%s)' % (where, kind))
    if kind == 'grok-parser':
        grok = _object(processor['grok'], where + '.grok')
        _known(grok, {'match_rules', 'support_rules'}, where + '.grok')
        _required(grok, ('match_rules',), where + '.grok')
        samples = processor.get('samples', [])
        if len(samples) > 5 or any(len(sample) > 5000 for sample in samples):
            raise Rejected(400, '%s: at most 5 samples of at most 5000 characters' % where)
    if kind == 'lookup-processor' and not all(',' in entry for entry in processor['lookup_table']):
        raise Rejected(400, '%s: lookup_table entries are "<SOURCE>,<VALUE>"' % where)
    if kind == 'pipeline':
        for index, inner in enumerate(processor.get('processors') or []):
            _valid_processor(inner, '%s.processors[%d]' % (where, index))


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise Rejected(400, '%s must be a JSON object' % where)
    return value


def _known(body: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Rejected(400, '%s: unknown fields %s' % (where, unknown))


def _required(body: dict, fields: tuple[str, ...], where: str) -> None:
    missing = [f for f in fields if f not in body or body[f] is None or body[f] == '']
    if missing:
        raise Rejected(400, '%s: missing required fields %s' % (where, missing))


def _int_param(request: Request, name: str, default: int) -> int:
    try:
        return int(request.query[name][0])
    except (KeyError, IndexError, ValueError):
        return default


def _dashboard_summary(dashboard: dict) -> dict:
    keys = ('id', 'title', 'description', 'layout_type', 'url', 'author_handle', 'is_read_only')
    return {k: dashboard[k] for k in keys if k in dashboard}


def _handler_for(fake: FakeDatadogAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get('Content-Length') or 0)
            raw = self.rfile.read(length) if length else b''
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                self._reply(400, {}, {'errors': ['Invalid JSON']})
                return
            request = Request(
                self.command,
                url.path,
                parse_qs(url.query),
                body,
                self.headers.get('DD-API-KEY'),
                self.headers.get('DD-APPLICATION-KEY'),
            )
            self._reply(*fake.handle(request))

        def _reply(self, status: int, headers: dict[str, str], body: Any) -> None:
            raw = isinstance(body, bytes)
            payload = body if raw else json.dumps(body).encode()
            self.send_response(status)
            self.send_header('Content-Type', 'text/html' if raw else 'application/json')
            self.send_header('Content-Length', str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
