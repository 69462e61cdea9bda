# Validation the spec cannot express. Generated once by ddev, then maintained by hand.

import difflib
import os
import re

from datadog_checks.gunicorn.configuration import parse_bind


def instance_bind(value, field=None, **kwargs):
    # Compared with the kernel's socket tables, so each address must be exact: a host name or a missing port would
    # have to be guessed, and a guess could count another program's listener.
    addresses = [value] if isinstance(value, str) else value
    if not isinstance(addresses, (list, tuple)) or not addresses:
        raise ValueError(
            'bind must be an address or a list of addresses such as 127.0.0.1:8000 or unix:/run/app.sock, got %r'
            % (value,)
        )
    for address in addresses:
        if not isinstance(address, str):
            raise ValueError('bind must list addresses as strings, got %r' % (address,))
        try:
            parse_bind(address.strip())
        except ValueError as exc:
            raise ValueError('bind: %s (use IP:PORT, [IPv6]:PORT or unix:PATH)' % exc) from None
    return [a.strip() for a in addresses]


def initialize_instance(values, **kwargs):
    if _autodiscovery_enabled(values):
        refuse_single_app_options(values)
        return values
    # The spec can only make options required one by one: either way of finding the master is enough. Empty values
    # are left to the options' own validators, whose messages say what the value should be.
    if values.get('proc_name') is None and values.get('pid_file') is None:
        typos = [
            '`%s` is not an option (did you mean `%s`?); ' % (str(key)[:100], close[0])
            for key in values
            if (close := difflib.get_close_matches(str(key), ['proc_name', 'pid_file'], n=1, cutoff=0.6))
            and key not in ('proc_name', 'pid_file')
        ]
        raise ValueError(
            '%sset `proc_name` (the name in `gunicorn: master [<proc_name>]`, or the `--name`/application module of '
            'the Gunicorn command line) or `pid_file` (the absolute path given to Gunicorn\'s `--pid`), or both; or '
            'enable `app_autodiscovery` to watch every application on the host' % ''.join(typos)
        )
    return values


def instance_tags(value, field=None, **kwargs):
    if isinstance(value, str):
        raise ValueError('tags must be a list of tags, got %r: write `tags: [%s]`' % (value, value))
    return value


def instance_cpu_sample_interval(value, field=None, **kwargs):
    # The whole run sleeps this long once; beyond a second it would delay every other check in the Agent's runner.
    if not _number(value) or not 0 < value <= 1:
        raise ValueError(
            'cpu_sample_interval must be a number of seconds greater than 0 and at most 1, got %r; '
            'remove the option to use the default of 0.1' % (value,)
        )
    return value


def instance_control_socket_timeout(value, field=None, **kwargs):
    if not _number(value) or not 0 < value <= 10:
        raise ValueError(
            'control_socket_timeout must be a number of seconds greater than 0 and at most 10, got %r; '
            'remove the option to use the default of 1' % (value,)
        )
    return value


def instance_heartbeat_timeout_share(value, field=None, **kwargs):
    if not _number(value) or not 0 < value <= 1:
        raise ValueError(
            'heartbeat_timeout_share must be a number greater than 0 and at most 1 (a share of the worker timeout), '
            'got %r; remove the option to use the default of 0.8' % (value,)
        )
    return value


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def instance_proc_name(value, field=None, **kwargs):
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            'proc_name must be the non-empty name shown in the master title `gunicorn: master [<proc_name>]`, got %r'
            % (value,)
        )
    return value


def instance_pid_file(value, field=None, **kwargs):
    if not isinstance(value, str) or not value.strip():
        raise ValueError('pid_file must be the non-empty path of Gunicorn\'s pid file (`--pid`), got %r' % (value,))
    if not os.path.isabs(value):
        # The Agent runs in its own working directory: resolving the path there finds nothing, or another file.
        raise ValueError(
            "pid_file must be an absolute path, got %r: Gunicorn's --pid is relative to the master's working "
            'directory (its --chdir, or where it was started), not the Agent\'s; write the full path '
            '(`python -m datadog_checks.gunicorn diagnose` prints it)' % (value,)
        )
    return value


# Options that describe one application: beside app_autodiscovery they would be applied to every application found.
SINGLE_APP_OPTIONS = {
    'proc_name': 'the instance would watch that one application, not every application on the host',
    'pid_file': 'a pid file names the master of one application',
    'bind': "the addresses of one application's listeners would be read as every application's",
    'control_socket': "one application's control socket would be asked about every master",
}


def _autodiscovery_enabled(values):
    autodiscovery = values.get('app_autodiscovery')
    # Anything but false or absent counts, so that a wrong value reaches instance_app_autodiscovery's message.
    return isinstance(autodiscovery, dict) and autodiscovery.get('enabled') not in (None, False)


def refuse_single_app_options(values):
    for option, why in SINGLE_APP_OPTIONS.items():
        if values.get(option) is not None:
            raise ValueError(
                '`%s` cannot be set beside `app_autodiscovery`: %s; remove `%s` to watch every application, or '
                'disable `app_autodiscovery` to watch this one' % (option, why, option)
            )


def instance_app_autodiscovery(value, field=None, **kwargs):
    if not isinstance(value, dict):
        raise ValueError(
            'app_autodiscovery must be a mapping such as {enabled: true, include: [...], exclude: [...], '
            'max_apps: 50}, got %r' % (value,)
        )
    enabled = value.get('enabled')
    if enabled is not None and not isinstance(enabled, bool):
        raise ValueError('app_autodiscovery.enabled must be true or false, got %r' % (enabled,))
    for option in ('include', 'exclude'):
        patterns = value.get(option)
        if patterns is None:
            continue
        if not isinstance(patterns, (list, tuple)):
            raise ValueError('app_autodiscovery.%s must be a list of regular expressions, got %r' % (option, patterns))
        for pattern in patterns:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise ValueError(
                    'app_autodiscovery.%s: %r is not a regular expression (%s); fix it or remove it'
                    % (option, pattern, exc)
                ) from None
    max_apps = value.get('max_apps')
    if max_apps is not None and (not isinstance(max_apps, int) or isinstance(max_apps, bool) or max_apps < 1):
        raise ValueError(
            'app_autodiscovery.max_apps must be a whole number of applications, at least 1, got %r; remove it to '
            'use the default of 50' % (max_apps,)
        )
    return value
