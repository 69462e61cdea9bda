"""The asset files turned into Datadog API request bodies, and how the installer recognises what it created before.

Field names and required fields follow Datadog's API reference (docs.datadoghq.com/api/latest/dashboards,
/monitors, /logs-pipelines) and the OpenAPI spec it is generated from (DataDog/datadog-api-client-python,
.generator/schemas/v1/openapi.yaml: Dashboard, Monitor, LogsPipeline and the Logs*Processor schemas).

How the installer finds its own objects again, so that a second run updates instead of duplicating:
- monitors carry two tags: `managed_by:datadog_checks.gunicorn` (ours) and `gunicorn_asset:<file name>` (which one);
- dashboards: the v1 dashboard `tags` field is documented as "team names representing ownership", so the same two
  markers go on the last line of the description instead, which the dashboard list returns;
- the log pipeline: by its name and its filter query, among pipelines that are not read-only (Datadog's own
  integration pipeline for `source:gunicorn` is read-only and named differently).
An object counts as ours only with the managed-by marker, and is then matched by its asset marker or, failing that,
by its title or name: a monitor renamed in a new release is still updated in place.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .files import AssetError, AssetFile, Assets

MANAGED_BY = 'managed_by:datadog_checks.gunicorn'
ASSET_TAG_KEY = 'gunicorn_asset'
PIPELINE_NAME = 'Gunicorn (custom check)'
PIPELINE_QUERY = 'source:gunicorn'
PIPELINE_DESCRIPTION = (
    "Parses Gunicorn's access and error logs into http.*, error.* and gunicorn.* attributes; the gunicorn check's "
    'monitors read @gunicorn.event. Installed by `python -m datadog_checks.gunicorn assets install`, which replaces '
    'changes made here.'
)
# The grok parser's samples: at most 5, each at most 5000 characters (LogsGrokParser.samples).
MAX_GROK_SAMPLES = 5
MAX_GROK_SAMPLE_LENGTH = 5000

DASHBOARD_WRITABLE = (
    'title',
    'description',
    'layout_type',
    'reflow_type',
    'template_variables',
    'template_variable_presets',
    'widgets',
    'notify_list',
    'restricted_roles',
    'tags',
)
DASHBOARD_READ_ONLY = ('id', 'author_handle', 'author_name', 'created_at', 'modified_at', 'url', 'is_read_only')
MONITOR_WRITABLE = ('name', 'type', 'query', 'message', 'tags', 'options', 'priority', 'restricted_roles')
MONITOR_READ_ONLY = (
    'id',
    'created',
    'creator',
    'deleted',
    'modified',
    'overall_state',
    'state',
    'matching_downtimes',
    'multi',
    'org_id',
)

# integrations-core pipeline files spell fields as Datadog's pipeline export does (camelCase, `enabled`); the Logs
# Pipelines API spells them in snake_case. Per processor type: file field -> API field, then the API's required fields.
_COMMON_FIELDS = {'type': 'type', 'name': 'name', 'enabled': 'is_enabled'}
_PROCESSOR_FIELDS: dict[str, dict[str, str]] = {
    'grok-parser': {'source': 'source', 'samples': 'samples', 'grok': 'grok'},
    'lookup-processor': {
        'source': 'source',
        'target': 'target',
        'lookupTable': 'lookup_table',
        'defaultLookup': 'default_lookup',
    },
    'url-parser': {'sources': 'sources', 'target': 'target', 'normalizeEndingSlashes': 'normalize_ending_slashes'},
    'user-agent-parser': {'sources': 'sources', 'target': 'target', 'encoded': 'is_encoded'},
    'date-remapper': {'sources': 'sources'},
    'status-remapper': {'sources': 'sources'},
    'service-remapper': {'sources': 'sources'},
    'message-remapper': {'sources': 'sources'},
    'category-processor': {'categories': 'categories', 'target': 'target'},
    'attribute-remapper': {
        'sources': 'sources',
        'target': 'target',
        'preserveSource': 'preserve_source',
        'overrideOnConflict': 'override_on_conflict',
        'sourceType': 'source_type',
        'targetType': 'target_type',
        'targetFormat': 'target_format',
    },
    'string-builder-processor': {'template': 'template', 'target': 'target', 'replaceMissing': 'is_replace_missing'},
    'geo-ip-parser': {'sources': 'sources', 'target': 'target'},
    'trace-id-remapper': {'sources': 'sources'},
    'span-id-remapper': {'sources': 'sources'},
    'pipeline': {'filter': 'filter', 'processors': 'processors'},
}
_PROCESSOR_REQUIRED: dict[str, tuple[str, ...]] = {
    'grok-parser': ('source', 'grok'),
    'lookup-processor': ('source', 'target', 'lookup_table'),
    'url-parser': ('sources', 'target'),
    'user-agent-parser': ('sources', 'target'),
    'date-remapper': ('sources',),
    'status-remapper': ('sources',),
    'service-remapper': ('sources',),
    'message-remapper': ('sources',),
    'category-processor': ('categories', 'target'),
    'attribute-remapper': ('sources', 'target'),
    'string-builder-processor': ('template', 'target'),
    'geo-ip-parser': ('sources', 'target'),
    'trace-id-remapper': (),
    'span-id-remapper': (),
    'pipeline': (),
}


@dataclass(frozen=True)
class Body:
    """One request body, with what the installer needs to find the object it was created as."""

    kind: str  # 'dashboard', 'monitor' or 'pipeline'
    asset_id: str
    title: str
    body: dict[str, Any]

    @property
    def export_name(self) -> str:
        return '%s-%s.json' % (self.kind, self.asset_id)


def asset_tag(asset_id: str) -> str:
    return '%s:%s' % (ASSET_TAG_KEY, asset_id)


def dashboard_marker(asset_id: str) -> str:
    return '[%s %s]' % (MANAGED_BY, asset_tag(asset_id))


def build_bodies(assets: Assets) -> list[Body]:
    """Every request body the installer sends, in the order it sends them."""
    bodies = [dashboard_body(asset) for asset in assets.dashboards]
    bodies.extend(monitor_body(asset) for asset in assets.monitors)
    bodies.append(pipeline_body(assets.pipeline))
    return bodies


def dashboard_body(asset: AssetFile) -> Body:
    source = _mapping(asset.content, asset)
    _reject_unknown(source, DASHBOARD_WRITABLE + DASHBOARD_READ_ONLY, asset)
    body = {key: copy.deepcopy(source[key]) for key in DASHBOARD_WRITABLE if key in source}
    _require(body, ('title', 'widgets', 'layout_type'), asset)
    if not isinstance(body['widgets'], list) or body['layout_type'] not in ('ordered', 'free'):
        raise AssetError('%s: widgets must be a list and layout_type "ordered" or "free"' % asset.path)
    description = (body.get('description') or '').rstrip()
    body['description'] = ('%s\n\n%s' % (description, dashboard_marker(asset.asset_id))).lstrip()
    return Body('dashboard', asset.asset_id, body['title'], body)


def monitor_body(asset: AssetFile) -> Body:
    # Integration monitor files wrap the API body in `definition`, beside their own catalogue fields.
    definition = _mapping(_mapping(asset.content, asset).get('definition'), asset, 'definition')
    _reject_unknown(definition, MONITOR_WRITABLE + MONITOR_READ_ONLY, asset)
    body = {key: copy.deepcopy(definition[key]) for key in MONITOR_WRITABLE if key in definition}
    # name and message are optional in the API; ours are found again by name, and notify with their message.
    _require(body, ('type', 'query', 'name', 'message'), asset)
    body['tags'] = _unique([*body.get('tags', []), MANAGED_BY, asset_tag(asset.asset_id)])
    return Body('monitor', asset.asset_id, body['name'], body)


def pipeline_body(asset: AssetFile) -> Body:
    pipeline = _mapping(_mapping(asset.content, asset).get('pipeline'), asset, 'pipeline')
    query = _mapping(pipeline.get('filter'), asset, 'pipeline.filter').get('query')
    if query != PIPELINE_QUERY:
        raise AssetError('%s: the pipeline filter must be %r, not %r' % (asset.path, PIPELINE_QUERY, query))
    processors = pipeline.get('processors')
    if not isinstance(processors, list) or not processors:
        raise AssetError('%s: pipeline.processors must be a non-empty list' % asset.path)
    body = {
        'name': PIPELINE_NAME,
        'description': PIPELINE_DESCRIPTION,
        'is_enabled': bool(pipeline.get('enabled', True)),
        'filter': {'query': query},
        'processors': [convert_processor(p, asset, 'pipeline.processors[%d]' % i) for i, p in enumerate(processors)],
    }
    return Body('pipeline', asset.asset_id, PIPELINE_NAME, body)


def convert_processor(processor: Any, asset: AssetFile, where: str) -> dict[str, Any]:
    """One processor from the integrations-core pipeline format to the Logs Pipelines API format."""
    processor = _mapping(processor, asset, where)
    kind = processor.get('type')
    if kind not in _PROCESSOR_FIELDS:
        raise AssetError(
            '%s: %s has processor type %r, which the installer does not convert' % (asset.path, where, kind)
        )
    fields = {**_COMMON_FIELDS, **_PROCESSOR_FIELDS[kind]}
    unknown = sorted(set(processor) - set(fields))
    if unknown:
        raise AssetError(
            '%s: %s (%s) has fields the installer does not convert: %s' % (asset.path, where, kind, unknown)
        )
    converted = {fields[key]: copy.deepcopy(value) for key, value in processor.items()}
    # The API defaults is_enabled to false: a processor left without it would be installed switched off.
    converted.setdefault('is_enabled', True)
    missing = [field for field in _PROCESSOR_REQUIRED[kind] if converted.get(field) in (None, '', [])]
    if missing:
        raise AssetError('%s: %s (%s) lacks %s' % (asset.path, where, kind, ', '.join(missing)))
    if kind == 'grok-parser':
        converted['grok'] = _convert_grok(converted, asset, where)
    elif kind == 'category-processor':
        _check_categories(converted['categories'], asset, where)
    elif kind == 'pipeline':
        converted['processors'] = [
            convert_processor(p, asset, '%s.processors[%d]' % (where, i))
            for i, p in enumerate(converted.get('processors') or [])
        ]
    return converted


def _convert_grok(processor: dict[str, Any], asset: AssetFile, where: str) -> dict[str, str]:
    grok = _mapping(processor['grok'], asset, where + '.grok')
    unknown = sorted(set(grok) - {'supportRules', 'matchRules'})
    if unknown or not (grok.get('matchRules') or '').strip():
        raise AssetError('%s: %s.grok needs matchRules (and only supportRules beside it)' % (asset.path, where))
    samples = processor.get('samples', [])
    if len(samples) > MAX_GROK_SAMPLES or any(len(s) > MAX_GROK_SAMPLE_LENGTH for s in samples):
        raise AssetError(
            '%s: %s has more than %d samples or one longer than %d characters'
            % (asset.path, where, MAX_GROK_SAMPLES, MAX_GROK_SAMPLE_LENGTH)
        )
    return {'support_rules': grok.get('supportRules') or '', 'match_rules': grok['matchRules']}


def _check_categories(categories: Any, asset: AssetFile, where: str) -> None:
    for category in categories:
        if not (isinstance(category, dict) and category.get('name') and (category.get('filter') or {}).get('query')):
            raise AssetError('%s: %s has a category without a name and filter.query' % (asset.path, where))


# Recognising our objects among what the account already has.


def find_existing(body: Body, candidates: Iterable[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict]]:
    """The object this body was created as (best match first), and any other matches, which are left alone."""
    score = _SCORES[body.kind]
    scored = []
    for candidate in candidates:
        if isinstance(candidate, dict) and (rank := score(body, candidate)) is not None:
            scored.append((rank, candidate))
    # Stable sort: among equal matches the API's own order decides.
    scored.sort(key=lambda pair: pair[0], reverse=True)
    if not scored:
        return None, []
    return scored[0][1], [candidate for _, candidate in scored[1:]]


def _dashboard_score(body: Body, summary: dict[str, Any]) -> tuple[bool, bool] | None:
    description = summary.get('description') or ''
    if MANAGED_BY not in description:
        return None
    by_asset, by_title = dashboard_marker(body.asset_id) in description, summary.get('title') == body.title
    return (by_asset, by_title) if by_asset or by_title else None


def _monitor_score(body: Body, monitor: dict[str, Any]) -> tuple[bool, bool] | None:
    tags = monitor.get('tags') or []
    if MANAGED_BY not in tags:
        return None
    by_asset, by_name = asset_tag(body.asset_id) in tags, monitor.get('name') == body.title
    return (by_asset, by_name) if by_asset or by_name else None


def _pipeline_score(body: Body, pipeline: dict[str, Any]) -> tuple[bool, bool] | None:
    if pipeline.get('is_read_only') or pipeline.get('name') != body.title:
        return None
    return (True, True) if (pipeline.get('filter') or {}).get('query') == PIPELINE_QUERY else None


_SCORES: dict[str, Callable[[Body, dict[str, Any]], tuple[bool, bool] | None]] = {
    'dashboard': _dashboard_score,
    'monitor': _monitor_score,
    'pipeline': _pipeline_score,
}


def _mapping(value: Any, asset: AssetFile, where: str = 'the file') -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AssetError('%s: %s must be a JSON/YAML object' % (asset.path, where))
    return value


def _require(body: dict[str, Any], fields: tuple[str, ...], asset: AssetFile) -> None:
    missing = [field for field in fields if body.get(field) in (None, '', [])]
    if missing:
        raise AssetError('%s lacks %s, which the API requires' % (asset.path, ', '.join(missing)))


def _reject_unknown(source: dict[str, Any], known: tuple[str, ...], asset: AssetFile) -> None:
    # A field the installer would silently drop is better caught when the asset is edited.
    unknown = sorted(set(source) - set(known))
    if unknown:
        raise AssetError('%s has fields the installer does not send: %s' % (asset.path, unknown))


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
