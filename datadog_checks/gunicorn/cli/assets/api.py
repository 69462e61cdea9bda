"""A small client for the Datadog API endpoints the assets installer uses, over `requests`.

`requests` rather than Datadog's `datadog-api-client`: the installer must run in the Agent's embedded Python, whose
packages are those of datadog-checks-base[deps] (requests, pyyaml, ...), and `datadog-api-client` is not among them;
`agent integration install` installs a wheel with `--no-deps`, so a dependency the Agent lacks cannot come along.
The installer needs ten calls, each documented in Datadog's API reference (docs.datadoghq.com/api/latest/...).

Every request has a timeout. A 429 is retried after the wait Datadog asks for (`Retry-After`, else
`X-RateLimit-Reset`, seconds; docs.datadoghq.com/api/latest/rate-limits), a bounded number of times. A 5xx is retried
only for GET and PUT, which are idempotent: a POST that failed with a 5xx may still have created the object.
Errors become one `ApiError` line; keys never enter a message, and what the server said is bounded and sanitised.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import requests

from ...sources.redaction import clip

# Datadog sites and their API hosts, `https://api.<site>` for each (docs.datadoghq.com/getting_started/site and the
# endpoint tables of docs.datadoghq.com/api/latest/...).
SITES = (
    'datadoghq.com',
    'us3.datadoghq.com',
    'us5.datadoghq.com',
    'datadoghq.eu',
    'ap1.datadoghq.com',
    'ap2.datadoghq.com',
    'uk1.datadoghq.com',
    'ddog-gov.com',
    'us2.ddog-gov.com',
)
DEFAULT_SITE = 'datadoghq.com'
TIMEOUT = (5.0, 30.0)  # connect, read (seconds)
MAX_ATTEMPTS = 4
MAX_WAIT = 60.0  # the longest single wait for a rate limit before giving up
BACKOFF = 1.0  # first wait before retrying a 429 without rate-limit headers, or a 5xx; doubles each time
PAGE_SIZE = 100
MAX_PAGES = 1000  # a server that ignores paging cannot keep the installer listing forever
SERVER_TEXT_LIMIT = 200
# Datadog API keys are 32 characters and application keys 40; masking a much shorter value would garble every word
# that happens to contain it, and such a value is no working key.
MIN_MASKED_LENGTH = 8

_HOSTNAME = re.compile(r'^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$')
_CONTROL = re.compile(r'[\x00-\x1f\x7f-\x9f]+')
# The permission each call needs, as the API reference names it, for the 403 message.
_PERMISSIONS = {
    ('GET', 'dashboard'): 'dashboards_read',
    ('POST', 'dashboard'): 'dashboards_write',
    ('PUT', 'dashboard'): 'dashboards_write',
    ('GET', 'monitor'): 'monitors_read',
    ('POST', 'monitor'): 'monitors_write (log monitors also need an application key without scopes)',
    ('PUT', 'monitor'): 'monitors_write (log monitors also need an application key without scopes)',
    ('GET', 'logs'): 'logs_read_config',
    ('POST', 'logs'): 'logs_write_pipelines',
    ('PUT', 'logs'): 'logs_write_pipelines',
}


class ApiError(Exception):
    """One line for the user; never contains a key."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SiteError(ValueError):
    pass


def api_url_for_site(site: str) -> str:
    """`https://api.<site>` for a Datadog site name such as `datadoghq.eu`; rejects web addresses given instead."""
    site = site.strip().lower()
    if '://' in site or '/' in site:
        raise SiteError('DD_SITE=%s is a URL: give the site name only, one of %s' % (site, ', '.join(SITES)))
    for prefix in ('app.', 'api.'):
        if site.startswith(prefix) and site[len(prefix) :] in SITES:
            raise SiteError('DD_SITE=%s is a host name: use DD_SITE=%s' % (site, site[len(prefix) :]))
    if site not in SITES and not _HOSTNAME.match(site):
        raise SiteError('DD_SITE=%s is not a Datadog site: use one of %s' % (site, ', '.join(SITES)))
    return 'https://api.%s' % site


def app_url_for_site(site: str) -> str:
    """The web app's address: app.<site> for the sites named by their bare domain, <site> for the regional ones."""
    site = site.strip().lower()
    return 'https://app.%s' % site if site.count('.') == 1 else 'https://%s' % site


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if len(secret) >= MIN_MASKED_LENGTH:
            text = text.replace(secret, '***')
    return text


def sanitize(text: str, secrets: Iterable[str] = (), limit: int = SERVER_TEXT_LIMIT) -> str:
    """Server text made safe to print on one line: keys masked, control characters removed, length bounded."""
    return clip(' '.join(_CONTROL.sub(' ', mask(text, secrets)).split()), limit)


class DatadogAPI:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        app_key: str,
        *,
        site: str,
        endpoint_hint: str | None = None,
        timeout: tuple[float, float] = TIMEOUT,
        max_attempts: int = MAX_ATTEMPTS,
        max_wait: float | None = None,
        backoff: float | None = None,
        sleep: Callable[[float], None] | None = None,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip('/')
        self.site = site
        self._endpoint_hint = endpoint_hint or 'DD_SITE (now %s)' % site
        self._secrets = (api_key, app_key)
        self._timeout = timeout
        self._max_attempts = max(1, max_attempts)
        # Read at construction, not import, so that tests can shorten them.
        self._max_wait = MAX_WAIT if max_wait is None else max_wait
        self._backoff = BACKOFF if backoff is None else backoff
        self._sleep = sleep or time.sleep
        self._on_wait = on_wait or (lambda message: None)
        self._session = requests.Session()
        self._session.headers.update(
            {
                'DD-API-KEY': api_key,
                'DD-APPLICATION-KEY': app_key,
                'Accept': 'application/json',
                'User-Agent': 'datadog-gunicorn-assets-installer',
            }
        )

    def close(self) -> None:
        self._session.close()

    # The calls the installer makes.

    def validate(self) -> None:
        """GET /api/v1/validate: checks the API key (not the application key) against this site."""
        try:
            reply = self.request('GET', '/api/v1/validate')
        except ApiError as exc:
            if exc.status in (401, 403):
                raise ApiError(
                    '%s rejected DD_API_KEY (%d): check the key, and that %s is the site of the account it belongs to'
                    % (self.base_url, exc.status, self._endpoint_hint),
                    exc.status,
                ) from None
            raise
        if not (isinstance(reply, dict) and reply.get('valid') is True):
            raise ApiError('%s did not confirm that DD_API_KEY is valid' % self.base_url)

    def list_dashboards(self) -> list[dict[str, Any]]:
        return self._paged('/api/v1/dashboard', 'dashboards', 'start', 'count', offset_paging=True)

    def list_monitors(self, monitor_tag: str) -> list[dict[str, Any]]:
        return self._paged('/api/v1/monitor', None, 'page', 'page_size', extra={'monitor_tags': monitor_tag})

    def list_pipelines(self) -> list[dict[str, Any]]:
        reply = self.request('GET', '/api/v1/logs/config/pipelines')
        return self._list_of_objects(reply, 'GET /api/v1/logs/config/pipelines')

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object(self.request('POST', _COLLECTIONS[kind], body=body), 'POST ' + _COLLECTIONS[kind])

    def update(self, kind: str, object_id: str | int, body: dict[str, Any]) -> dict[str, Any]:
        path = '%s/%s' % (_COLLECTIONS[kind], object_id)
        return self._object(self.request('PUT', path, body=body), 'PUT ' + path)

    # The transport.

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        url = self.base_url + path
        for attempt in range(1, self._max_attempts + 1):
            response = self._send(method, url, path, params, body)
            status = response.status_code
            if 200 <= status < 300:
                return self._json(response, method, path)
            retryable = status == 429 or (status >= 500 and method in ('GET', 'PUT'))
            if not retryable or attempt == self._max_attempts:
                raise self._error(response, method, path, attempt)
            wait = self._wait_for(response, attempt)
            if wait > self._max_wait:
                raise ApiError(
                    'Datadog answered %d to %s %s and asks to wait %.0f s: run the installer again then'
                    % (status, method, path, wait),
                    status,
                )
            self._on_wait('%s %s answered %d; retrying in %.1f s' % (method, path, status, wait))
            self._sleep(wait)
        raise AssertionError('unreachable')  # pragma: no cover

    def _send(self, method: str, url: str, path: str, params, body) -> requests.Response:
        try:
            # No redirects: requests drops only the Authorization header on a redirect to another host, and would
            # send DD-API-KEY and DD-APPLICATION-KEY wherever the Location header points.
            return self._session.request(
                method, url, params=params, json=body, timeout=self._timeout, allow_redirects=False
            )
        except requests.exceptions.RequestException as exc:
            raise ApiError(
                'cannot reach %s (%s) for %s %s: check %s, the network, or HTTPS_PROXY'
                % (self.base_url, _network_reason(exc, self._timeout), method, path, self._endpoint_hint)
            ) from None

    def _wait_for(self, response: requests.Response, attempt: int) -> float:
        for header in ('Retry-After', 'X-RateLimit-Reset'):
            value = _seconds(response.headers.get(header))
            if value is not None:
                return value
        return self._backoff * 2 ** (attempt - 1)

    def _error(self, response: requests.Response, method: str, path: str, attempts: int) -> ApiError:
        status = response.status_code
        said = self._server_said(response)
        where = '%s %s' % (method, path)
        if status in (401, 403):
            permission = _PERMISSIONS.get((method, path.split('/')[3] if path.count('/') >= 3 else ''), 'access')
            return ApiError(
                '%s refused %s (%d%s): DD_APP_KEY may be invalid, belong to another site than %s, or lack the %s '
                'permission' % (self.base_url, where, status, said, self.site, permission),
                status,
            )
        if status == 429:
            limit = sanitize(response.headers.get('X-RateLimit-Name', ''), self._secrets, 60)
            return ApiError(
                'Datadog rate limit%s still reached on %s after %d attempts: wait a minute and run the installer again'
                % (' (%s)' % limit if limit else '', where, attempts),
                status,
            )
        if status >= 500:
            return ApiError(
                "Datadog answered %d to %s%s after %d attempt%s: a problem on Datadog's side; try again later"
                % (status, where, said, attempts, '' if attempts == 1 else 's'),
                status,
            )
        if 300 <= status < 400:
            return ApiError(
                '%s answered %s with a redirect (%d), which the installer does not follow so as not to send the keys '
                'elsewhere: check %s' % (self.base_url, where, status, self._endpoint_hint),
                status,
            )
        if status == 404 and method == 'PUT':
            return ApiError('%s: the object was deleted meanwhile (404); run the installer again' % where, status)
        return ApiError('Datadog rejected %s (%d%s)' % (where, status, said), status)

    def _server_said(self, response: requests.Response) -> str:
        # Only Datadog's documented error shape, {"errors": [...]}, is shown: never an HTML page or anything else.
        try:
            errors = response.json().get('errors')
        except (ValueError, AttributeError):
            return ''
        if not isinstance(errors, list) or not errors:
            return ''
        return ': ' + sanitize('; '.join(str(error) for error in errors), self._secrets)

    def _json(self, response: requests.Response, method: str, path: str) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                'the answer to %s %s from %s is not JSON: does DD_SITE or --api-url point at the Datadog API?'
                % (method, path, self.base_url)
            ) from None

    def _paged(
        self,
        path: str,
        key: str | None,
        page_param: str,
        size_param: str,
        *,
        offset_paging: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        seen: set[Any] = set()
        for page in range(MAX_PAGES):
            position = page * PAGE_SIZE if offset_paging else page
            reply = self.request('GET', path, params={**(extra or {}), page_param: position, size_param: PAGE_SIZE})
            batch = self._list_of_objects(reply.get(key) if key and isinstance(reply, dict) else reply, 'GET ' + path)
            fresh = [item for item in batch if item.get('id') not in seen]
            seen.update(item.get('id') for item in batch)
            items.extend(fresh)
            # A short page is the last; so is a page with nothing new (a server that ignores the paging parameters).
            if len(batch) < PAGE_SIZE or not fresh:
                break
        return items

    @staticmethod
    def _list_of_objects(value: Any, where: str) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise ApiError('the answer to %s is not the list the API reference describes' % where)
        return [item for item in value if isinstance(item, dict)]

    @staticmethod
    def _object(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict) or 'id' not in value:
            raise ApiError('the answer to %s has no id' % where)
        return value


_COLLECTIONS = {
    'dashboard': '/api/v1/dashboard',
    'monitor': '/api/v1/monitor',
    'pipeline': '/api/v1/logs/config/pipelines',
}


def _seconds(value: str | None) -> float | None:
    # Datadog sends both headers as whole seconds; an HTTP-date Retry-After is not used by its API.
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def _network_reason(exc: requests.exceptions.RequestException, timeout: tuple[float, float]) -> str:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return 'no connection within %g s' % timeout[0]
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return 'no answer within %g s' % timeout[1]
    if isinstance(exc, requests.exceptions.SSLError):
        return 'TLS handshake failed'
    if isinstance(exc, requests.exceptions.ProxyError):
        return 'the proxy refused or failed'
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return 'DNS lookup failed'
        if isinstance(cause, ConnectionRefusedError):
            return 'connection refused'
        cause = cause.__cause__ or cause.__context__
    # urllib3 wraps the socket error in its own types without chaining every time; its text names the cause.
    text = str(exc)
    if 'Name or service not known' in text or 'getaddrinfo' in text or 'NameResolutionError' in text:
        return 'DNS lookup failed'
    if 'Connection refused' in text:
        return 'connection refused'
    return 'connection failed'


def host_of(url: str) -> str:
    return urlsplit(url).netloc or url
