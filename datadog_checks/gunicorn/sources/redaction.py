"""What may be shown of what the host hands over: command lines with their secrets hidden, applications named without
the arguments of a factory call, and texts cut to a bounded length.

The rule, for tags, messages, logs and `diagnose` alike: values of options and variables named like secrets
(`--password`, `-e SECRET_KEY=...`, `API_TOKEN=...`), credentials in URLs (`postgres://user:pass@db`) and tokens after
`Bearer`/`Basic`/`token` become `********`; an application given as a factory call, `app:make_app(password="x")`, is
named `app:make_app` (and shown `app:make_app(...)` inside a command line); and no text from the host is longer than
a message can carry (`clip`). File contents are never shown at all: they are described.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

REDACTED = '********'
# Words that make an option, variable or query parameter name a secret's name. Matched against the name's words
# (split on - _ . and case changes are ignored) so that `--keyfile` (a path) stays while `--api-key` goes.
_SECRET_WORDS = frozenset(
    {
        'auth',
        'authorization',
        'bearer',
        'cookie',
        'cred',
        'creds',
        'credential',
        'credentials',
        'dsn',
        'jwt',
        'key',
        'apikey',
        'pass',
        'passphrase',
        'passwd',
        'password',
        'pwd',
        'private',
        'salt',
        'secret',
        'session',
        'signature',
        'token',
    }
)
_URL_USERINFO = re.compile(r'(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@')
_QUERY_PARAM = re.compile(r'(?P<sep>[?&;])(?P<name>[^=&;#\s]+)=(?P<value>[^&;#\s]*)')
_ASSIGNMENT = re.compile(r'\A(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)=(?P<value>.*)\Z', re.DOTALL)
_SCHEME_TOKEN = re.compile(r'(?i)\b(?P<scheme>bearer|basic|token)\s+\S+')


# Inside a word too: `PGPASSWORD`, `MYSQL_PWD` is a word, `DJANGO_SECRETKEY`.
_SECRET_PARTS = ('passw', 'secret', 'token', 'apikey', 'credential')


def is_secret_name(name: str) -> bool:
    words = [w for w in re.split(r'[-_.\s]+', name.strip('-').lower()) if w]
    return any(w in _SECRET_WORDS or any(part in w for part in _SECRET_PARTS) for w in words)


def redact_text(text: str) -> str:
    """One argument with the credentials of URLs, secret query parameters and auth tokens replaced."""
    text = _URL_USERINFO.sub(lambda m: '%s%s@' % (m['scheme'], REDACTED), text)
    text = _QUERY_PARAM.sub(
        lambda m: '%s%s=%s' % (m['sep'], m['name'], REDACTED if is_secret_name(m['name']) else m['value']), text
    )
    return _SCHEME_TOKEN.sub(lambda m: '%s %s' % (m['scheme'], REDACTED), text)


def redact(argv: Sequence[str]) -> list[str]:
    """A command line safe to show: values of secret-looking options and assignments, and URL credentials, replaced.

    `--password=x`, `--api-key x`, `-e SECRET_KEY=x`, `DATABASE_PASSWORD=x`, `postgres://user:x@db/app`,
    `https://h/?token=x`. Over-redacting a harmless value is acceptable; printing a secret is not.
    """
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next and not (arg.startswith('-') and len(arg) > 1):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        if arg[:1] == '-' and arg[1:2].isalpha() and len(arg) > 2:
            # `-eSECRET_KEY=x`, `-e=SECRET_KEY=x`: a short option with its value attached. Bundled flags (`-DR`) go
            # through the same rules and come out unchanged.
            attached = arg[2:]
            prefix = arg[:2] + ('=' if attached.startswith('=') else '')
            out.append(prefix + _redact_value(attached[len(prefix) - 2 :]))
            continue
        if arg.startswith('-') and len(arg) > 1:
            option, eq, value = arg.partition('=')
            if is_secret_name(option):
                if eq:
                    out.append('%s=%s' % (option, REDACTED))
                else:
                    out.append(arg)
                    hide_next = True
                continue
            if eq:
                out.append('%s=%s' % (option, _redact_value(value)))
                continue
            out.append(redact_text(arg))
            continue
        out.append(_redact_value(arg))
    return out


def _redact_value(value: str) -> str:
    factory = _FACTORY_CALL.match(value)
    if factory:
        return '%s(...)' % factory['app']
    assignment = _ASSIGNMENT.match(value)
    if assignment and is_secret_name(assignment['name']):
        return '%s=%s' % (assignment['name'], REDACTED)
    if assignment:
        return '%s=%s' % (assignment['name'], redact_text(assignment['value']))
    return redact_text(value)


def redacted_command(argv: Sequence[str], max_chars: int = 300) -> str:
    """A redacted command line as one shell-quoted string, cut to `max_chars` so that messages stay short."""
    return clip(shlex.join(redact(argv)), max_chars)


# A WSGI application given as a call of a factory, `module:make_app(password="x")` (Gunicorn 20.1+): its arguments
# are Python code from the command line. Gunicorn uses the whole string as the default proc_name, so it reaches
# process titles too.
_FACTORY_CALL = re.compile(r'\A\s*(?P<app>[A-Za-z_][\w.]*:[A-Za-z_][\w.]*)\s*\(.*\)\s*\Z', re.DOTALL)


def app_name(name: str | None) -> str | None:
    """An application's name as the check shows and tags it: a factory call without its arguments."""
    if name is None:
        return None
    factory = _FACTORY_CALL.match(name)
    return factory['app'] if factory else name


def clip(text: str, max_chars: int) -> str:
    """`text` cut to `max_chars`, marked as cut: host data has no length limit, messages do."""
    return text if len(text) <= max_chars else text[: max(max_chars - 3, 0)] + '...'
