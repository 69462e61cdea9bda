"""Run the check without an Agent and print what the Agent would receive, in the shape of `datadog-agent check`.

    python -m datadog_checks.gunicorn --conf /etc/datadog-agent/conf.d/gunicorn.d/conf.yaml
    python -m datadog_checks.gunicorn --proc-name myapp --times 2 --pause 1 [--json]
    python -m datadog_checks.gunicorn --pid-file /run/gunicorn/myapp.pid
    python -m datadog_checks.gunicorn diagnose [--proc-name NAME] [--pid-file FILE]   (see diagnose.py)

The check class is the real one, run through `AgentCheck.run()`, so configuration models, warnings and errors
behave as in the Agent; the Agent's aggregator and metadata store are replaced by datadog_checks.base's stubs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from datadog_checks.base import ConfigurationError
from datadog_checks.base.stubs import aggregator, datadog_agent

from ..__about__ import __version__
from ..check import GunicornCheck

EXIT_OK = 0
EXIT_RUN_FAILED = 1  # a run failed
EXIT_CONFIGURATION = 2  # the configuration cannot be used: one line on stderr names the problem
EXIT_NO_MASTER = 3  # the runs went through, and an instance found no master (its service check says why)

# The stub aggregator's submission types, by the names `datadog-agent check` prints.
METRIC_TYPES = {0: 'gauge', 1: 'rate', 2: 'count', 3: 'monotonic_count', 4: 'counter', 5: 'histogram', 6: 'historate'}


@dataclass
class InstanceReport:
    check_id: str
    source: str
    series: list[dict[str, Any]] = field(default_factory=list)
    service_checks: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    runs: int = 0
    samples_last: int = 0
    samples_total: int = 0
    service_checks_last: int = 0
    service_checks_total: int = 0
    run_seconds: list[float] = field(default_factory=list)
    last_run: str = ''
    last_success: str = ''

    configuration_error: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def found_master(self) -> bool:
        return any(s['metric'] == 'gunicorn.workers' for s in self.series)


class ConfError(Exception):
    """A --conf file that cannot be used; the message names the file and the problem, in one line."""


def load_config(path: str) -> tuple[dict, list[dict]]:
    """init_config and the instances of a conf.yaml, or ConfError saying why not (never the file's content)."""
    try:
        with open(path, encoding='utf-8') as f:
            config = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfError('%s: no such file' % path) from None
    except PermissionError:
        raise ConfError('%s: permission denied' % path) from None
    except IsADirectoryError:
        raise ConfError('%s: a directory, not a conf.yaml' % path) from None
    except UnicodeDecodeError:
        raise ConfError('%s: not UTF-8 text' % path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, 'problem_mark', None)
        where = ' at line %d' % (mark.line + 1) if mark is not None else ''
        raise ConfError(
            '%s: not valid YAML%s (a value holding `: `, `[` or `#`, such as a whole process title, must be quoted)'
            % (path, where)
        ) from None
    except OSError as exc:
        raise ConfError('%s: %s' % (path, exc.strerror or type(exc).__name__)) from None
    if not isinstance(config, dict) or not isinstance(config.get('instances'), list) or not config['instances']:
        raise ConfError('%s: expected a conf.yaml with an `instances:` list of at least one instance' % path)
    if not all(isinstance(instance, dict) for instance in config['instances']):
        raise ConfError('%s: each item of `instances:` must be a mapping of options (proc_name: ...)' % path)
    init_config = config.get('init_config') or {}
    if not isinstance(init_config, dict):
        raise ConfError('%s: `init_config:` must be a mapping or empty' % path)
    return init_config, config['instances']


def run_instance(init_config: dict, instance: dict, source: str, times: int, pause: float) -> InstanceReport:
    """The runs of one instance; ConfigurationError when the check refuses its configuration, as the Agent would."""
    check = GunicornCheck('gunicorn', init_config, [instance])  # raises for a metric_patterns of the wrong shape
    # The Agent names an instance by a digest of its configuration; do the same so that ids are stable.
    digest = hashlib.sha256(json.dumps([instance, init_config], sort_keys=True, default=str).encode()).hexdigest()
    report = InstanceReport(check_id='gunicorn:%s' % digest[:16], source=source)
    check.check_id = report.check_id
    hostname = socket.gethostname()
    for n in range(times):
        if n:
            time.sleep(pause)
        aggregator.reset()
        datadog_agent.reset()
        started = time.perf_counter()
        result = check.run()
        report.run_seconds.append(time.perf_counter() - started)
        now = datetime.now(UTC).isoformat(timespec='seconds')
        report.runs += 1
        report.last_run = now
        if result:
            failures = json.loads(result)
            report.errors = [e.get('message', '') for e in failures]
            if any(_raised_configuration_error(e.get('traceback') or '') for e in failures):
                raise ConfigurationError(report.errors[0])
        else:
            report.errors = []
            report.last_success = now
        report.series = _series(hostname)
        report.service_checks = _service_checks(hostname)
        report.samples_last = len(report.series)
        report.samples_total += report.samples_last
        report.service_checks_last = len(report.service_checks)
        report.service_checks_total += report.service_checks_last
        report.metadata.update({k: v for (_, k), v in datadog_agent._metadata.items()})
        report.warnings = list(check.warnings)
        check.warnings.clear()
    return report


def _raised_configuration_error(traceback: str) -> bool:
    # AgentCheck.run() returns the error's message and traceback, whose last line names the exception's type.
    last = traceback.strip().splitlines()[-1:] or ['']
    return 'ConfigurationError' in last[0]


def _series(hostname: str) -> list[dict[str, Any]]:
    now = int(time.time())
    return [
        {
            'metric': m.name,
            'points': [[now, m.value]],
            'tags': sorted(m.tags),
            'host': m.hostname or hostname,
            'type': METRIC_TYPES.get(m.type, str(m.type)),
            'interval': 0,
            'source_type_name': 'System',
        }
        for name in sorted(aggregator._metrics)
        for m in aggregator._metrics[name]
    ]


def _service_checks(hostname: str) -> list[dict[str, Any]]:
    now = int(time.time())
    return [
        {
            'check': sc.name,
            'host_name': sc.hostname or hostname,
            'timestamp': now,
            'status': sc.status,
            'message': sc.message or '',
            'tags': sorted(sc.tags),
        }
        for name in sorted(aggregator._service_checks)
        for sc in aggregator._service_checks[name]
    ]


def render_text(reports: list[InstanceReport]) -> str:
    out = []
    for r in reports:
        out += ['=== Series ===', json.dumps(r.series, indent=2), '=== Service Checks ===']
        out += [json.dumps(r.service_checks, indent=2), '']
    out += ['=========', 'Collector', '=========', '', '  Running Checks', '  ==============', '']
    title = 'gunicorn (%s)' % __version__
    out += ['    ' + title, '    ' + '-' * len(title)]
    for r in reports:
        average_ms = 1000 * sum(r.run_seconds) / max(len(r.run_seconds), 1)
        out += [
            '      Instance ID: %s [%s]'
            % (r.check_id, 'OK' if r.ok and not r.warnings else 'ERROR' if r.errors else 'WARNING'),
            '      Configuration Source: %s' % r.source,
            '      Total Runs: %d' % r.runs,
            '      Metric Samples: Last Run: %d, Total: %d' % (r.samples_last, r.samples_total),
            '      Events: Last Run: 0, Total: 0',
            '      Service Checks: Last Run: %d, Total: %d' % (r.service_checks_last, r.service_checks_total),
            '      Average Execution Time : %dms' % round(average_ms),
            '      Last Execution Date : %s' % r.last_run,
            '      Last Successful Execution Date : %s' % (r.last_success or 'Never'),
        ]
        if r.metadata:
            out.append('      metadata:')
            out += ['        %s: %s' % (k, v) for k, v in sorted(r.metadata.items())]
        out += ['      Warning: %s' % w for w in r.warnings]
        out += ['      Error: %s' % e for e in r.errors]
        out.append('')
    return '\n'.join(out)


def render_json(reports: list[InstanceReport]) -> str:
    return json.dumps(
        [
            {
                'instance_id': r.check_id,
                'configuration_source': r.source,
                'series': r.series,
                'service_checks': r.service_checks,
                'metadata': r.metadata,
                'warnings': r.warnings,
                'errors': r.errors,
                'runs': r.runs,
                'metric_samples': {'last_run': r.samples_last, 'total': r.samples_total},
                'service_check_count': {'last_run': r.service_checks_last, 'total': r.service_checks_total},
                'average_execution_time_ms': 1000 * sum(r.run_seconds) / max(len(r.run_seconds), 1),
            }
            for r in reports
        ],
        indent=2,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m datadog_checks.gunicorn',
        description='Run the Gunicorn check without an Agent and print what the Agent would receive.',
        epilog='`python -m datadog_checks.gunicorn diagnose --help`: why a master is not found, and what to change.',
    )
    parser.add_argument('--conf', metavar='FILE', help='a gunicorn.d/conf.yaml (every instance in it is run)')
    parser.add_argument('--proc-name', metavar='NAME', help='the name in `gunicorn: master [NAME]`')
    parser.add_argument('--pid-file', metavar='FILE', help='the pid file Gunicorn writes (`--pid`)')
    parser.add_argument('--gunicorn', metavar='CMD', help='with --proc-name: the command that prints the version')
    parser.add_argument('--times', type=int, default=1, metavar='N', help='runs per instance (default 1)')
    parser.add_argument('--pause', type=float, default=1.0, metavar='S', help='seconds between runs (default 1)')
    parser.add_argument('--json', action='store_true', help='print JSON for machines instead of the Agent layout')
    parser.add_argument(
        '--log-level', default='error', choices=['debug', 'info', 'warning', 'error'], help='check logs on stderr'
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.conf and (args.proc_name or args.pid_file):
        parser.error('--conf runs the instances of a file: it goes without --proc-name and --pid-file')
    if not (args.conf or args.proc_name or args.pid_file):
        parser.error('one of --conf, --proc-name or --pid-file is required')
    # Warnings are already in the report; the check's log is for --log-level debug sessions.
    logging.basicConfig(level=args.log_level.upper(), format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    if args.times < 1:
        raise SystemExit('--times must be at least 1')
    if args.conf:
        try:
            init_config, instances = load_config(args.conf)
        except ConfError as exc:
            print('error: %s' % exc, file=sys.stderr)
            return EXIT_CONFIGURATION
        source = 'file:%s' % args.conf
    else:
        instance = {k: v for k, v in (('proc_name', args.proc_name), ('pid_file', args.pid_file)) if v}
        if args.gunicorn:
            instance['gunicorn'] = args.gunicorn
        init_config, instances, source = {}, [instance], 'command line'
    reports = []
    for number, instance in enumerate(instances, 1):
        try:
            reports.append(run_instance(init_config, instance, source, args.times, args.pause))
        except ConfigurationError as exc:
            where = '%s, instance %d' % (args.conf, number) if args.conf else 'the command line'
            print('error: %s: %s' % (where, ' '.join(str(exc).split())), file=sys.stderr)
            return EXIT_CONFIGURATION
    print(render_json(reports) if args.json else render_text(reports))
    if not all(r.ok for r in reports):
        return EXIT_RUN_FAILED
    return EXIT_OK if all(r.found_master for r in reports) else EXIT_NO_MASTER


if __name__ == '__main__':
    sys.exit(main())
