"""`assets install` and `assets export`: the integration's dashboard, monitors and log pipeline into a Datadog account.

A wheel installed with `agent integration install` carries Python code only; the dashboard, the monitors and the log
pipeline they rely on (two monitors query `@gunicorn.event`, which only this pipeline writes) exist as files in
`assets/`. `install` creates them through Datadog's public API, or updates the ones it created before; `export`
writes the same request bodies to files for Terraform or GitOps users, without any key or network access.
Saved views have no public API: `install` says where to add them by hand.

Keys come from DD_API_KEY and DD_APP_KEY, the site from DD_SITE (default datadoghq.com); `--api-url` overrides the
endpoint (a proxy, or the tests' loopback fake).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from .api import (
    DEFAULT_SITE,
    SITES,
    ApiError,
    DatadogAPI,
    SiteError,
    api_url_for_site,
    app_url_for_site,
    host_of,
    mask,
    sanitize,
)
from .bodies import MANAGED_BY, Body, build_bodies, find_existing
from .files import AssetError, AssetFile, load_assets

PROG = 'python -m datadog_checks.gunicorn assets'
SAVED_VIEW_PAGES = {'logs': ('Log Explorer', '/logs'), 'process': ('Processes page', '/process')}


class UsageError(Exception):
    pass


class Console:
    """Everything the command prints goes through here, so that no key can reach the terminal or a CI log."""

    def __init__(self, secrets: tuple[str, ...], out: TextIO | None = None, err: TextIO | None = None) -> None:
        self._secrets = secrets
        self._out = out or sys.stdout
        self._err = err or sys.stderr

    def info(self, message: str) -> None:
        print(self._mask(message), file=self._out)

    def error(self, message: str) -> None:
        # One line, whatever the message held.
        print('error: %s' % self._mask(' '.join(message.split())), file=self._err)

    def _mask(self, text: str) -> str:
        return mask(text, self._secrets)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    install = commands.add_parser(
        'install',
        help='create or update the dashboard, monitors and log pipeline in your Datadog account',
        description='Keys from DD_API_KEY and DD_APP_KEY; site from DD_SITE (default %s; one of %s).'
        % (DEFAULT_SITE, ', '.join(SITES)),
    )
    install.add_argument('--dry-run', action='store_true', help='look up what exists and say what would change')
    install.add_argument('--api-url', metavar='URL', help='API endpoint to use instead of https://api.<DD_SITE>')
    export = commands.add_parser('export', help='write the request bodies as JSON files, one per asset; sends nothing')
    export.add_argument('directory', metavar='DIR', type=Path)
    return parser


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    console = Console(tuple(environ.get(name, '').strip() for name in ('DD_API_KEY', 'DD_APP_KEY')))
    try:
        if args.command == 'export':
            return export(args.directory, console)
        return install(args, environ, console)
    except (AssetError, ApiError, SiteError, UsageError) as exc:
        console.error(str(exc))
        return 1
    except KeyboardInterrupt:
        console.error('interrupted: what was already created or updated stays; run the command again to finish')
        return 130


def export(directory: Path, console: Console) -> int:
    bodies = build_bodies(load_assets())
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for body in bodies:
            (directory / body.export_name).write_text(json.dumps(body.body, indent=2) + '\n', encoding='utf-8')
    except OSError as exc:
        raise UsageError('cannot write to %s: %s' % (directory, exc.strerror or exc)) from None
    console.info('wrote %d request bodies to %s:' % (len(bodies), directory))
    for body in bodies:
        console.info('  %s  (%s %r)' % (body.export_name, body.kind, body.title))
    console.info('Saved views have no API: see the saved_views folder of the assets, or `assets install --dry-run`.')
    return 0


def install(args: argparse.Namespace, environ: Mapping[str, str], console: Console) -> int:
    assets = load_assets()
    bodies = build_bodies(assets)  # before any request: a broken asset file needs no network to report
    api_key, app_key = _keys(environ)
    site, base_url, app_url = _endpoint(args.api_url, environ, console)
    hint = '--api-url' if args.api_url else 'DD_SITE (now %s)' % site
    api = DatadogAPI(base_url, api_key, app_key, site=site, endpoint_hint=hint, on_wait=console.info)
    try:
        api.validate()
        console.info('Datadog site %s (%s): DD_API_KEY accepted.' % (site, base_url))
        existing = {
            'dashboard': api.list_dashboards(),
            'monitor': api.list_monitors(MANAGED_BY),
            'pipeline': api.list_pipelines(),
        }
        for body in bodies:
            _apply(api, body, existing[body.kind], args.dry_run, app_url, console)
    finally:
        api.close()
    _print_saved_views(assets.saved_views, app_url, console)
    console.info(
        "Log pipeline: Datadog's own read-only 'Gunicorn' integration pipeline also processes source:gunicorn; both "
        'apply, in the order shown on the Pipelines page (see the README).'
    )
    if args.dry_run:
        console.info('Dry run: nothing was created or changed.')
    return 0


def _apply(api: DatadogAPI, body: Body, candidates: list, dry_run: bool, app_url: str | None, console: Console) -> None:
    found, others = find_existing(body, candidates)
    label = '%s %r' % (body.kind, body.title)
    if others:
        console.info(
            'note: %s: %d more %ss carry the same marker (ids %s); they are left alone'
            % (label, len(others), body.kind, ', '.join(str(o.get('id')) for o in others))
        )
    if dry_run:
        console.info('%s: would %s' % (label, 'update id %s' % found['id'] if found else 'create'))
        return
    if found:
        result = api.update(body.kind, found['id'], body.body)
        verb = 'updated'
    else:
        result = api.create(body.kind, body.body)
        candidates.append(result)  # a second asset of the same title in this run must not update this one
        verb = 'created'
    link = _link(body.kind, result, app_url)
    console.info('%s: %s (id %s)%s' % (label, verb, result['id'], ' ' + link if link else ''))


def _keys(environ: Mapping[str, str]) -> tuple[str, str]:
    api_key, app_key = (environ.get(name, '').strip() for name in ('DD_API_KEY', 'DD_APP_KEY'))
    missing = [name for name, value in (('DD_API_KEY', api_key), ('DD_APP_KEY', app_key)) if not value]
    if missing:
        raise UsageError(
            '%s %s not set: export DD_API_KEY (an API key) and DD_APP_KEY (an application key), both from Organization '
            'Settings of your Datadog account' % (' and '.join(missing), 'are' if len(missing) == 2 else 'is')
        )
    return api_key, app_key


def _endpoint(api_url: str | None, environ: Mapping[str, str], console: Console) -> tuple[str, str, str | None]:
    """(site label for messages, API base URL, web app URL or None when --api-url hides which site it is)."""
    if api_url:
        _check_api_url(api_url)
        return host_of(api_url), api_url, None
    site = (environ.get('DD_SITE') or DEFAULT_SITE).strip().lower()
    base_url = api_url_for_site(site)
    if site not in SITES:
        console.info('note: DD_SITE=%s is not a site this installer knows; using %s' % (site, base_url))
    return site, base_url, app_url_for_site(site)


def _check_api_url(api_url: str) -> None:
    parts = urlsplit(api_url)
    if parts.scheme not in ('https', 'http') or not parts.hostname:
        raise UsageError('--api-url %s: give a URL starting with https://' % sanitize(api_url, limit=100))
    # The keys travel in headers: in clear text only to this machine, where they cross no network.
    if parts.scheme == 'http' and not _is_loopback(parts.hostname):
        raise UsageError('--api-url must use https:// (http:// only for a loopback address such as 127.0.0.1)')


def _is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _link(kind: str, result: dict, app_url: str | None) -> str:
    if app_url is None:
        return ''
    if kind == 'dashboard':
        url = result.get('url')
        return app_url + url if isinstance(url, str) and url.startswith('/') else ''
    if kind == 'monitor':
        return '%s/monitors/%s' % (app_url, result['id'])
    return app_url + '/logs/pipelines'


def _print_saved_views(views: tuple[AssetFile, ...], app_url: str | None, console: Console) -> None:
    console.info('Saved views have no public API; add them by hand (search, then "Save as" with the name):')
    for view in views:
        content = view.content if isinstance(view.content, dict) else {}
        page, path = SAVED_VIEW_PAGES.get(content.get('type'), ('page', ''))
        where = '%s (%s%s)' % (page, app_url, path) if app_url else page
        console.info('  %r on the %s, query: %s' % (content.get('name', view.asset_id), where, content.get('query')))
