"""A small evaluator for the part of Datadog's log-pipeline language that assets/logs/gunicorn.yaml uses.

It reads the pipeline file itself and runs a log line through its processors the way Datadog's intake does, so that the
samples in gunicorn_tests.yaml and real Gunicorn output can be checked here. It is deliberately strict: a matcher,
filter, processor, field or query it does not model raises `Unsupported` instead of being skipped, so a test can never
pass on something it did not evaluate.

Datadog's grok runs on Java regular expressions; the patterns used here mean the same in Python's `re` (3.11 adds the
atomic groups Java has). One thing the documentation leaves open is whether `data` is lazy or greedy and whether it
crosses newlines, so every parse is run under all four readings and must give the same result.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PIPELINE_FILE = ROOT / 'assets' / 'logs' / 'gunicorn.yaml'
TESTS_FILE = ROOT / 'assets' / 'logs' / 'gunicorn_tests.yaml'


class Unsupported(AssertionError):
    """The pipeline uses something this evaluator does not model: the test must fail, not guess."""


class Ambiguous(AssertionError):
    """A rule gives different results depending on how `data` is read."""


# Matchers

_IPV4 = r'(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)'
# The text forms of RFC 4291: full, compressed with ::, and ending in an IPv4 address. H is one 16-bit group.
_IPV6_FORMS = (
    '(?:(?:H:){7}H|(?:H:){1,7}:|(?:H:){1,6}:H|(?:H:){1,5}(?::H){1,2}|(?:H:){1,4}(?::H){1,3}|(?:H:){1,3}(?::H){1,4}'
    '|(?:H:){1,2}(?::H){1,5}|H:(?::H){1,6}|:(?:(?::H){1,7}|:)|(?:H:){6}V4|::(?:[fF]{4}(?::0{1,4})?:)?V4|(?:H:){1,5}:V4)'
)
_IPV6 = _IPV6_FORMS.replace('H', '[0-9A-Fa-f]{1,4}').replace('V4', _IPV4)
_IP = rf'(?:{_IPV6}|{_IPV4})'
_HOST = r'\b(?:[0-9A-Za-z][0-9A-Za-z-]{0,62})(?:\.(?:[0-9A-Za-z][0-9A-Za-z-]{0,62}))*\.?'

# name -> (regular expression, conversion of the matched text)
_MATCHERS = {
    'word': (r'\b[A-Za-z0-9_]+\b', str),
    'notSpace': (r'\S+', str),
    'integer': (r'[+-]?\d+', int),
    'ip': (_IP, str),
    'ipOrHost': (rf'(?:{_IP}|{_HOST})', str),
}

# The four readings of `data` (lazy or greedy, with or without newlines); all must agree.
DATA_READINGS = (r'.*?', r'.*', r'[\s\S]*?', r'[\s\S]*')

# Java date-pattern letters used by the pipeline -> (regex, strptime directive)
_DATE_TOKENS = {
    'yyyy': (r'\d{4}', '%Y'),
    'MMM': (r'[A-Z][a-z]{2}', '%b'),
    'MM': (r'\d{2}', '%m'),
    'dd': (r'\d{2}', '%d'),
    'HH': (r'\d{2}', '%H'),
    'mm': (r'\d{2}', '%M'),
    'ss': (r'\d{2}', '%S'),
    'SSS': (r'\d{3}', '%f'),
    'Z': (r'[+-]\d{4}', '%z'),
}


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _date_matcher(pattern: str):
    """Translate a Java date pattern into a regex and a parser returning epoch milliseconds (UTC without a zone)."""
    regex, fmt, pos = '', '', 0
    while pos < len(pattern):
        run = re.match(r'([A-Za-z])\1*', pattern[pos:])
        if run:
            letters = run.group(0)
            if letters not in _DATE_TOKENS:
                raise Unsupported(f'date pattern letters {letters!r} in {pattern!r}')
            regex += _DATE_TOKENS[letters][0]
            fmt += _DATE_TOKENS[letters][1]
            pos += len(letters)
        else:
            regex += re.escape(pattern[pos])
            fmt += pattern[pos].replace('%', '%%')
            pos += 1

    def parse(text: str) -> int:
        when = dt.datetime.strptime(text, fmt)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return (when - _EPOCH) // dt.timedelta(milliseconds=1)

    return regex, parse


# Filters: name -> function(value, *args)


def _null_if(value, target):
    return None if value == target else value


def _scale(value, factor):
    return float(value) * float(factor)


_FILTERS = {'nullIf': _null_if, 'integer': int, 'scale': _scale}


# Grok parsing


@dataclass
class _Capture:
    attribute: str
    convert: Any
    filters: list = field(default_factory=list)


_TOKEN = re.compile(r'%\{')
_NAME = re.compile(r'[A-Za-z_]\w*')
_ATTR = re.compile(r'[A-Za-z_@][\w.@-]*')


def _parse_args(text: str, pos: int) -> tuple[list, int]:
    """Parse `("a", "b")` or `(123)` starting at text[pos] == '('; grok strings use Java escapes for \\ and "."""
    args = []
    pos += 1
    while True:
        if text[pos] == '"':
            pos += 1
            value = ''
            while text[pos] != '"':
                if text[pos] == '\\':
                    if text[pos + 1] not in '\\"':
                        raise Unsupported(f'escape \\{text[pos + 1]} in a grok string')
                    value += text[pos + 1]
                    pos += 2
                else:
                    value += text[pos]
                    pos += 1
            args.append(value)
            pos += 1
        else:
            number = re.match(r'\d+(?:\.\d+)?', text[pos:])
            if not number:
                raise Unsupported(f'grok argument at {text[pos : pos + 20]!r}')
            args.append(number.group(0))
            pos += len(number.group(0))
        if text[pos] == ',':
            pos += 1
            while text[pos] == ' ':
                pos += 1
        elif text[pos] == ')':
            return args, pos + 1
        else:
            raise Unsupported(f'grok arguments at {text[pos : pos + 20]!r}')


class GrokParser:
    """Support rules and match rules; the first match rule that matches the whole text wins."""

    def __init__(self, support_rules: str, match_rules: str):
        self._support: dict[str, str] = {}
        self._rules: dict[str, str] = {}
        for target, text in ((self._support, support_rules), (self._rules, match_rules)):
            for line in (text or '').splitlines():
                line = line.strip()
                if not line or line.startswith('#'):
                    continue
                name, _, pattern = line.partition(' ')
                if not re.fullmatch(r'[A-Za-z0-9_][\w.]*', name) or not pattern:
                    raise Unsupported(f'grok rule line {line!r}')
                if name in self._support or name in self._rules:
                    raise Unsupported(f'duplicate grok rule {name!r}')
                # A rule may only use the rules written above it, as in Datadog.
                self._check_references(pattern)
                target[name] = pattern.strip()
        self._compiled: dict[tuple[str, str], tuple[re.Pattern, list[_Capture]]] = {}
        for name, reading in itertools.product(self._rules, DATA_READINGS):
            self._compiled[name, reading] = self._compile(self._rules[name], reading)

    def _check_references(self, pattern: str) -> None:
        for ref in re.findall(r'%\{(_?[A-Za-z][\w.]*)[:}]', pattern):
            if ref not in _MATCHERS and ref != 'data' and ref not in self._support and ref not in self._rules:
                raise Unsupported(f'matcher or rule {ref!r} (not defined above its use)')

    def _compile(self, pattern: str, reading: str) -> tuple[re.Pattern, list[_Capture]]:
        captures: list[_Capture] = []
        regex = self._expand(pattern, reading, captures, depth=0)
        return re.compile(regex), captures

    def _expand(self, pattern: str, reading: str, captures: list[_Capture], depth: int) -> str:
        if depth > 20:
            raise Unsupported('grok rules nested too deeply')
        out, pos = '', 0
        for start in (m.start() for m in _TOKEN.finditer(pattern)):
            if start < pos:
                continue
            out += pattern[pos:start]
            pos = start + 2
            name = _NAME.match(pattern, pos).group(0)
            pos += len(name)
            args: list = []
            if pattern[pos] == '(':
                args, pos = _parse_args(pattern, pos)
            attribute, filters = None, []
            if pattern[pos] == ':':
                attr = _ATTR.match(pattern, pos + 1)
                if not attr:
                    raise Unsupported(f'extract in {pattern[start : start + 40]!r}')
                attribute, pos = attr.group(0), attr.end()
                while pattern[pos] == ':':
                    fname = _NAME.match(pattern, pos + 1).group(0)
                    pos += 1 + len(fname)
                    fargs: list = []
                    if pattern[pos] == '(':
                        fargs, pos = _parse_args(pattern, pos)
                    if fname not in _FILTERS:
                        raise Unsupported(f'grok filter {fname!r}')
                    filters.append((fname, fargs))
            if pattern[pos] != '}':
                raise Unsupported(f'grok token at {pattern[start : start + 40]!r}')
            pos += 1
            out += self._matcher(name, args, attribute, filters, reading, captures, depth)
        return out + pattern[pos:]

    def _matcher(self, name, args, attribute, filters, reading, captures, depth) -> str:
        if name in self._support or name in self._rules:
            if args or attribute:
                raise Unsupported(f'extracting a whole rule (%{{{name}:{attribute}}})')
            source = self._support.get(name) or self._rules[name]
            return f'(?:{self._expand(source, reading, captures, depth + 1)})'
        if name == 'regex':
            if len(args) != 1:
                raise Unsupported('regex() takes one pattern')
            regex, convert = args[0], str
        elif name == 'date':
            if len(args) != 1:
                raise Unsupported('date() with a time zone or locale argument')
            regex, convert = _date_matcher(args[0])
        elif name == 'data':
            regex, convert = reading, str
        elif name in _MATCHERS and not args:
            regex, convert = _MATCHERS[name]
        else:
            raise Unsupported(f'grok matcher {name!r}')
        if attribute is None:
            return f'(?:{regex})'
        captures.append(_Capture(attribute, convert, filters))
        return f'(?P<g{len(captures) - 1}>{regex})'

    def parse(self, text: str) -> tuple[str, dict] | None:
        """Return (rule name, {attribute path: value}) for the first rule matching all of `text`, or None."""
        outcomes = {reading: self._parse(text, reading) for reading in DATA_READINGS}
        first = outcomes[DATA_READINGS[0]]
        for reading, outcome in outcomes.items():
            if outcome != first:
                raise Ambiguous(
                    f'{text[:200]!r}: {first!r} with data={DATA_READINGS[0]}, {outcome!r} with data={reading}'
                )
        return first

    def _parse(self, text: str, reading: str):
        for name in self._rules:
            regex, captures = self._compiled[name, reading]
            found = regex.fullmatch(text)
            if not found:
                continue
            values: dict[str, Any] = {}
            for index, capture in enumerate(captures):
                raw = found.group(f'g{index}')
                if raw is None:
                    continue
                value = capture.convert(raw)
                for fname, fargs in capture.filters:
                    if value is None:
                        break
                    value = _FILTERS[fname](value, *fargs)
                # Datadog drops null and empty values.
                if value is None or value == '':
                    continue
                if capture.attribute in values:
                    raise Unsupported(f'attribute {capture.attribute!r} extracted twice by rule {name!r}')
                values[capture.attribute] = value
            return name, values
        return None


# Attributes


def get_path(attrs: dict, path: str):
    node: Any = attrs
    for part in path.split('.'):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_path(attrs: dict, path: str, value) -> None:
    parts = path.split('.')
    node = attrs
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise Unsupported(f'attribute {path!r} is both a value and an object')
    if parts[-1] in node and node[parts[-1]] != value:
        raise Unsupported(f'overwriting attribute {path!r} ({node[parts[-1]]!r} -> {value!r}) is not modelled')
    node[parts[-1]] = value


# Processors


@dataclass
class Log:
    message: str
    attributes: dict = field(default_factory=dict)
    timestamp: int | None = None
    status: str | None = None
    matched: dict = field(default_factory=dict)  # grok processor name -> rule name

    def result(self) -> dict:
        """The log in the shape of a `result:` of *_tests.yaml."""
        out = {'custom': self.attributes, 'message': self.message, 'status': self.status or 'info'}
        out['tags'] = ['source:LOGS_SOURCE']
        if self.timestamp is not None:
            out['timestamp'] = self.timestamp
        return out


def _check_keys(spec: dict, required: set[str], optional: set[str] = frozenset(), what: str = '') -> None:
    what = what or f'{spec.get("type")} {spec.get("name")!r}'
    keys = set(spec)
    if not required <= keys:
        raise Unsupported(f'{what} lacks {sorted(required - keys)}')
    if keys - required - optional:
        raise Unsupported(f'{what} has unmodelled fields {sorted(keys - required - optional)}')


def _check_processor(spec: dict, required: set[str], optional: set[str] = frozenset()) -> None:
    _check_keys(spec, required | {'type', 'name', 'enabled'}, optional)
    if spec['enabled'] is not True:
        raise Unsupported(f'{spec["type"]} {spec["name"]!r} is not enabled')


class _GrokProcessor:
    def __init__(self, spec: dict):
        _check_processor(spec, {'source', 'grok'}, {'samples'})
        _check_keys(spec['grok'], {'supportRules', 'matchRules'}, what=f'grok of {spec["name"]!r}')
        self.name, self.source = spec['name'], spec['source']
        self.samples = spec.get('samples') or []
        self.parser = GrokParser(spec['grok']['supportRules'], spec['grok']['matchRules'])

    def __call__(self, log: Log) -> None:
        text = log.message if self.source == 'message' else get_path(log.attributes, self.source)
        if text is None:
            return
        if not isinstance(text, str):
            raise Unsupported(f'grok source {self.source!r} is not a string')
        parsed = self.parser.parse(text)
        if parsed:
            log.matched[self.name] = parsed[0]
            for path, value in parsed[1].items():
                set_path(log.attributes, path, value)


class _LookupProcessor:
    def __init__(self, spec: dict):
        _check_processor(spec, {'source', 'target', 'lookupTable'}, {'defaultLookup'})
        self.source, self.target, self.default = spec['source'], spec['target'], spec.get('defaultLookup')
        self.table = {}
        for row in spec['lookupTable']:
            key, sep, value = row.partition(',')
            if not sep or ',' in value or key in self.table:
                raise Unsupported(f'lookup row {row!r}')
            self.table[key] = value

    def __call__(self, log: Log) -> None:
        value = get_path(log.attributes, self.source)
        if value is None:
            return
        mapped = self.table.get(str(value), self.default)
        if mapped is not None:
            set_path(log.attributes, self.target, mapped)


# RFC 3986 characters; a URL with anything else is not modelled.
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


class _UrlParser:
    def __init__(self, spec: dict):
        _check_processor(spec, {'sources', 'target'})
        if len(spec['sources']) != 1:
            raise Unsupported('url-parser with several sources')
        self.source, self.target = spec['sources'][0], spec['target']

    def __call__(self, log: Log) -> None:
        url = get_path(log.attributes, self.source)
        if url is None:
            return
        if not _URL_CHARS.fullmatch(url) or '#' in url:
            raise Unsupported(f'url-parser result for {url!r} is not modelled')
        details: dict[str, Any] = {}
        absolute = re.fullmatch(r'([a-z][a-z0-9+.-]*)://([^/:?]+):(\d+)(/[^?]*)(?:\?(.*))?', url)
        relative = re.fullmatch(r'(/[^?]*)(?:\?(.*))?', url)
        if absolute:
            details = {'scheme': absolute[1], 'host': absolute[2], 'port': int(absolute[3]), 'path': absolute[4]}
            query = absolute[5]
        elif relative:
            details, query = {'path': relative[1]}, relative[2]
        else:
            raise Unsupported(f'url-parser result for {url!r} is not modelled')
        if query:
            params = {}
            for pair in query.split('&'):
                key, sep, value = pair.partition('=')
                if not sep or key in params:
                    raise Unsupported(f'url-parser result for query {query!r} is not modelled')
                params[key] = value
            details['queryString'] = params
        set_path(log.attributes, self.target, details)


# Datadog's user-agent parser is a large external database: only results observed from Datadog itself are modelled.
# The Chrome/Linux result is the one Datadog's own nginx pipeline tests publish for this exact string.
KNOWN_USER_AGENTS = {
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/55.0.2883.87 Safari/537.36': {
        'browser': {'family': 'Chrome', 'major': '55', 'minor': '0', 'patch': '2883', 'patch_minor': '87'},
        'device': {'category': 'Desktop', 'family': 'Other'},
        'os': {'family': 'Linux'},
    },
}


class _UserAgentParser:
    def __init__(self, spec: dict):
        _check_processor(spec, {'sources', 'target', 'encoded'})
        if len(spec['sources']) != 1 or spec['encoded'] is not False:
            raise Unsupported('user-agent-parser with several sources or encoded input')
        self.source, self.target = spec['sources'][0], spec['target']

    def __call__(self, log: Log) -> None:
        agent = get_path(log.attributes, self.source)
        if agent is None:
            return
        if agent not in KNOWN_USER_AGENTS:
            raise Unsupported(f'user-agent-parser result for {agent!r} is unknown here')
        set_path(log.attributes, self.target, KNOWN_USER_AGENTS[agent])


class _DateRemapper:
    def __init__(self, spec: dict):
        _check_processor(spec, {'sources'})
        self.sources = spec['sources']

    def __call__(self, log: Log) -> None:
        for source in self.sources:
            value = get_path(log.attributes, source)
            if value is not None and log.timestamp is None:
                if not isinstance(value, int):
                    raise Unsupported(f'date-remapper on a non-epoch value {value!r}')
                log.timestamp = value
                return


_QUERY = re.compile(r'@([\w.]+):(?:\[(-?\d+) TO (-?\d+)\]|(\*)|([\w.-]+))')


def query_matches(query: str, attrs: dict) -> bool:
    """The three query shapes the pipeline uses: `@attr:[low TO high]`, `@attr:*` and `@attr:value`."""
    found = _QUERY.fullmatch(query)
    if not found:
        raise Unsupported(f'search query {query!r}')
    path, low, high, anything, literal = found.groups()
    value = get_path(attrs, path)
    if value is None:
        return False
    if anything:
        return True
    if low is not None:
        return isinstance(value, int | float) and int(low) <= value <= int(high)
    return str(value) == literal


class _CategoryProcessor:
    def __init__(self, spec: dict):
        _check_processor(spec, {'categories', 'target'})
        self.target = spec['target']
        self.categories = []
        for category in spec['categories']:
            if set(category) != {'filter', 'name'} or set(category['filter']) != {'query'}:
                raise Unsupported(f'category {category!r}')
            self.categories.append((category['filter']['query'], category['name']))

    def __call__(self, log: Log) -> None:
        for query, name in self.categories:
            if query_matches(query, log.attributes):
                set_path(log.attributes, self.target, name)
                return


def official_status(value) -> str:
    """Datadog's status remapper: syslog severities, then prefixes of the (case-insensitive) string."""
    syslog = ['emerg', 'alert', 'critical', 'error', 'warn', 'notice', 'info', 'debug']
    if isinstance(value, int):
        if 0 <= value <= 7:
            return syslog[value]
        raise Unsupported(f'status remapper on integer {value!r}')
    text = str(value).lower()
    for prefixes, status in (
        (('emerg', 'f'), 'emerg'),
        (('a',), 'alert'),
        (('c',), 'critical'),
        (('e',), 'error'),
        (('w',), 'warn'),
        (('n',), 'notice'),
        (('i',), 'info'),
        (('d', 'trace', 'verbose'), 'debug'),
        (('o', 's'), 'ok'),
    ):
        if text.startswith(prefixes):
            return status
    return 'info'


class _StatusRemapper:
    def __init__(self, spec: dict):
        _check_processor(spec, {'sources'})
        self.sources = spec['sources']

    def __call__(self, log: Log) -> None:
        for source in self.sources:
            value = get_path(log.attributes, source)
            if value is not None and log.status is None:
                log.status = official_status(value)
                return


_PROCESSORS = {
    'grok-parser': _GrokProcessor,
    'lookup-processor': _LookupProcessor,
    'url-parser': _UrlParser,
    'user-agent-parser': _UserAgentParser,
    'date-remapper': _DateRemapper,
    'category-processor': _CategoryProcessor,
    'status-remapper': _StatusRemapper,
}


class Pipeline:
    def __init__(self, definition: dict):
        if set(definition) - {'id', 'metric_id', 'backend_only', 'facets', 'pipeline'}:
            raise Unsupported(f'pipeline file fields {sorted(set(definition))}')
        spec = definition['pipeline']
        _check_keys(spec, {'type', 'name', 'enabled', 'filter', 'processors'}, what='pipeline')
        if spec['type'] != 'pipeline' or spec['filter'] != {'query': 'source:gunicorn'}:
            raise Unsupported(f'pipeline type or filter {spec["filter"]!r}')
        self.id = definition['id']
        self.facets = definition.get('facets') or []
        self.processors = []
        for processor in spec['processors']:
            if processor.get('type') not in _PROCESSORS:
                raise Unsupported(f'processor type {processor.get("type")!r}')
            self.processors.append(_PROCESSORS[processor['type']](processor))

    @property
    def grok_processors(self) -> list[_GrokProcessor]:
        return [p for p in self.processors if isinstance(p, _GrokProcessor)]

    def process(self, message: str) -> Log:
        log = Log(message)
        for processor in self.processors:
            processor(log)
        return log


def load_pipeline(path: Path = PIPELINE_FILE) -> Pipeline:
    return Pipeline(yaml.safe_load(path.read_text()))


def load_tests(path: Path = TESTS_FILE) -> dict:
    return yaml.safe_load(path.read_text())
