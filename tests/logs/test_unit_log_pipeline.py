"""assets/logs/gunicorn.yaml against its own samples, and the evaluator against what it must refuse.

The samples of gunicorn_tests.yaml are real Gunicorn output; a few lines below are built by hand from Gunicorn's format
strings for messages the integration tests cannot provoke (dirty apps, gevent) or for access-log shapes that only custom
formats and proxies produce. Each is marked as such.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re

import pytest
import yaml

from .grok import PIPELINE_FILE, Ambiguous, GrokParser, Pipeline, Unsupported, get_path, load_pipeline, load_tests
from .test_integration_logs import CONTAINER_LOG_START

PIPELINE = load_pipeline()
TESTS = load_tests()
SAMPLES = TESTS['tests']
FORMATS = PIPELINE.grok_processors[0].parser
EVENT_LOOKUP = next(p for p in PIPELINE.processors if getattr(p, 'target', None) == 'gunicorn.event')

# Events Gunicorn only writes in setups the integration tests do not build; each has a hand-built line below.
NOT_IN_REAL_SAMPLES = {'dirty_worker_timeout', 'worker_graceful_timeout', 'socket_error', 'master_exception'}


def _id(sample: dict) -> str:
    return sample['sample'].split('\n', 1)[0][-70:]


@pytest.mark.parametrize('sample', SAMPLES, ids=[_id(s) for s in SAMPLES])
def test_sample_gives_its_expected_result(sample):
    assert PIPELINE.process(sample['sample']).result() == sample['result']


def test_tests_file_shape():
    assert TESTS['id'] == PIPELINE.id == 'gunicorn'
    assert all(set(sample) == {'sample', 'result'} for sample in SAMPLES)
    assert len({s['sample'] for s in SAMPLES}) == len(SAMPLES)


@pytest.mark.parametrize('processor', PIPELINE.grok_processors, ids=lambda p: p.name)
def test_grok_processor_samples_match_a_rule(processor):
    assert processor.samples
    for sample in processor.samples:
        assert processor.parser.parse(sample), sample


def test_every_event_phrase_has_a_lookup_entry():
    """Each phrase a rule captures into gunicorn.event_text must map to an event, and every mapping must be used."""
    text = yaml.safe_load(PIPELINE_FILE.read_text())['pipeline']['processors']
    rules = ''.join(p['grok']['matchRules'] for p in text if p['type'] == 'grok-parser')
    phrases = re.findall(r'%\{regex\("([^"]+)"\):gunicorn\.event_text\}', rules)
    keys = set(EVENT_LOOKUP.table)
    for phrase in phrases:
        assert {key for key in keys if re.fullmatch(phrase, key)}, phrase
    assert all(any(re.fullmatch(phrase, key) for phrase in phrases) for key in keys)


def test_every_event_appears_in_a_real_sample():
    seen = {get_path(s['result']['custom'], 'gunicorn.event') for s in SAMPLES}
    assert set(EVENT_LOOKUP.table.values()) - seen == NOT_IN_REAL_SAMPLES


def test_every_facet_is_filled_by_some_sample():
    for facet in PIPELINE.facets:
        assert any(get_path(s['result']['custom'], facet['path']) is not None for s in SAMPLES), facet['path']


# Lines built by hand from Gunicorn's format strings


@pytest.mark.parametrize(
    'line, event, attributes',
    [
        # dirty/arbiter.py (25.0+): self.log.critical("DIRTY WORKER TIMEOUT (pid:%s)", pid)
        (
            '[2026-11-24 23:00:07 +0000] [4991] [CRITICAL] DIRTY WORKER TIMEOUT (pid:5004)',
            'dirty_worker_timeout',
            {'gunicorn.worker.pid': 5004},
        ),
        # workers/ggevent.py: self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
        (
            '[2026-11-24 23:00:07 +0000] [5004] [WARNING] Worker graceful timeout (pid:5004)',
            'worker_graceful_timeout',
            {'gunicorn.worker.pid': 5004},
        ),
        ('[2026-11-24 23:00:07 +0000] [5004] [ERROR] Socket error processing request.', 'socket_error', {}),
        ('[2026-11-24 23:00:07 +0000] [4991] [ERROR] Unhandled exception in main loop', 'master_exception', {}),
        # 23.0+: the request line could not be read at all.
        (
            '[2026-11-24 23:00:07 +0000] [5004] [ERROR] Error handling request (no URI read)',
            'error_handling_request',
            {},
        ),
        # Listening again after a reload changed the bind address: no pid.
        (
            '[2026-11-24 23:00:07 +0000] [4991] [INFO] Listening at: unix:/run/app.sock,http://0.0.0.0:8000',
            'listening',
            {'gunicorn.listeners': 'unix:/run/app.sock,http://0.0.0.0:8000'},
        ),
        # Before 22.0 a worker ended by a signal was reported by number only.
        (
            '[2026-11-24 23:00:07 +0000] [4991] [WARNING] Worker with pid 5004 was terminated due to signal 15',
            'worker_killed',
            {'gunicorn.worker.signal': 'SIGTERM', 'gunicorn.worker.signal_number': 15},
        ),
    ],
)
def test_messages_the_integration_tests_cannot_provoke(line, event, attributes):
    log = PIPELINE.process(line)
    assert get_path(log.attributes, 'gunicorn.event') == event
    for path, value in attributes.items():
        assert get_path(log.attributes, path) == value


def test_access_lines_from_custom_formats_and_proxies():
    """Request atoms Gunicorn's own %(r)s never writes, but custom formats and proxies in front of it do."""
    head = '10.1.2.3 - - [24/Nov/2026:23:00:04 +0000] '
    rule, values = FORMATS.parse(head + '"GET /health" 200 2 "-" "-"')
    assert rule == 'access.combined'
    assert (values['http.method'], values['http.url'], values.get('http.version')) == ('GET', '/health', None)
    rule, values = FORMATS.parse(head + '"\\x16\\x03\\x01" 400 - "-" "-"')
    assert values['gunicorn.request_line'] == '\\x16\\x03\\x01' and 'http.method' not in values
    assert 'network.bytes_written' not in values


def test_escaped_quotes_inside_quoted_atoms():
    # Real 20.1.0 output for: GET /q?a="b", Referer: http://x/"y", User-Agent: Mo"zi\lla
    line = (
        '127.0.0.1 - user [24/Nov/2026:23:00:04 +0000] "GET /q?a=\\"b\\" HTTP/1.0" 200 10 "http://x/\\"y\\"" '
        '"Mo\\"zi\\lla"'
    )
    _, values = FORMATS.parse(line)
    assert values['http.url'] == '/q?a=\\"b\\"'
    assert values['http.referer'] == 'http://x/\\"y\\"'
    assert values['http.useragent'] == 'Mo\\"zi\\lla'
    # Gunicorn does not escape backslashes, so a value ending in one looks like an escaped quote.
    _, values = FORMATS.parse('127.0.0.1 - - [24/Nov/2026:23:00:04 +0000] "GET / HTTP/1.1" 200 1 "-" "tool\\"')
    assert values['http.useragent'] == 'tool\\'


@pytest.mark.parametrize(
    'address', ['127.0.0.1', '10.0.0.255', '::1', '::', '2001:db8::8a2e:370:7334', 'fe80::1', '::ffff:192.0.2.1']
)
def test_ip_matcher_accepts_what_ipaddress_accepts(address):
    ipaddress.ip_address(address)
    line = f'{address} - - [24/Nov/2026:23:00:04 +0000] "GET / HTTP/1.1" 200 1 "-" "-"'
    assert FORMATS.parse(line)[1]['network.client.ip'] == address


@pytest.mark.parametrize(
    'address', ['127.0.0.1', '::1', '::', '2001:db8::8a2e:370:7334', 'fe80::1', '::ffff:192.0.2.1', '1:2:3:4:5:6:7:8']
)
@pytest.mark.parametrize('port', [0, 8, 8080, 65535])
def test_uvicorn_client_is_split_at_its_last_colon(address, port):
    # uvicorn prints f'{host}:{port}' without brackets: a port of up to 4 digits could also end an IPv6 address.
    rule, values = FORMATS.parse(f'{address}:{port} - "GET / HTTP/1.1" 200')
    assert (rule, values['network.client.ip'], values['network.client.port']) == ('access.uvicorn', address, port)


def test_uvicorn_line_of_a_unix_socket_client_with_its_leading_space_trimmed():
    # Built by hand: a collector that strips the line drops the space that the empty client leaves.
    for line in (' - "GET / HTTP/1.1" 200', '- "GET / HTTP/1.1" 200'):
        rule, values = FORMATS.parse(line)
        assert (rule, values.get('network.client.ip'), values['http.status_code']) == ('access.uvicorn', None, 200)


# The evaluator refuses what it does not model


def _definition() -> dict:
    return copy.deepcopy(yaml.safe_load(PIPELINE_FILE.read_text()))


def _category(definition: dict) -> dict:
    return next(p for p in definition['pipeline']['processors'] if p['type'] == 'category-processor')


def _rules(text: str):
    """A change that replaces the match rules of the first grok parser."""
    return lambda d: d['pipeline']['processors'][0]['grok'].update(matchRules=text)


@pytest.mark.parametrize(
    'change, message',
    [
        (lambda d: d['pipeline']['processors'].append({'type': 'arithmetic-processor'}), 'processor type'),
        (lambda d: d['pipeline']['processors'][-1].update(preserveSource=True), 'unmodelled fields'),
        (lambda d: d['pipeline']['processors'][-1].update(enabled=False), 'not enabled'),
        (lambda d: d.update(metric_source='logs'), 'pipeline file fields'),
        (lambda d: _category(d)['categories'][0]['filter'].update(query='status:error'), 'search query'),
        (_rules('r %{hostname:x}'), 'matcher'),
        (_rules('r %{word:x:lowercase}'), 'filter'),
        (_rules('r %{_later}\n_later x'), 'matcher or rule'),
        (_rules('r %{date("EEE"):d}'), 'date pattern'),
        (_rules('r %{regex("\\d"):d}'), 'escape'),
    ],
)
def test_unmodelled_definitions_are_refused(change, message):
    definition = _definition()
    change(definition)
    with pytest.raises(Unsupported, match=message):
        Pipeline(definition).process('127.0.0.1 - - [24/Nov/2026:23:00:04 +0000] "GET / HTTP/1.1" 200 1 "-" "-"')


@pytest.mark.parametrize(
    'line, message',
    [
        ('127.0.0.1 - - [24/Nov/2026:23:00:04 +0000] "OPTIONS * HTTP/1.1" 200 1 "-" "-"', 'url-parser'),
        ('127.0.0.1 - - [24/Nov/2026:23:00:04 +0000] "GET /?a HTTP/1.1" 200 1 "-" "-"', 'url-parser'),
        ('127.0.0.1 - - [24/Nov/2026:23:00:04 +0000] "GET / HTTP/1.1" 200 1 "-" "curl/8.5.0"', 'user-agent-parser'),
    ],
)
def test_processor_results_it_cannot_know_are_refused(line, message):
    with pytest.raises(Unsupported, match=message):
        PIPELINE.process(line)


def test_a_rule_that_depends_on_how_data_is_read_is_refused():
    parser = GrokParser('', 'split %{data:a} %{data:b}')
    with pytest.raises(Ambiguous):
        parser.parse('x y z')
    assert parser.parse('x y') == ('split', {'a': 'x', 'b': 'y'})


def test_the_readme_container_pattern_is_the_one_the_integration_tests_use():
    # The Docker label of README "Log collection" must start a record at uvicorn's access lines as well as Gunicorn's.
    readme = (PIPELINE_FILE.parents[2] / 'README.md').read_text(encoding='utf-8')
    label = re.search(r"LABEL \"com\.datadoghq\.ad\.logs\"='(.*)'", readme).group(1)
    [rule] = json.loads(label)[0]['log_processing_rules']
    assert rule['pattern'] == CONTAINER_LOG_START
