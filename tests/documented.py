"""The commands README.md and CONTRIBUTING.md show in ```shell blocks, and how a test runs one of them here.

A command is one line of a ```shell block once backslash continuations are joined and a trailing `# comment` is
dropped; `export X=...` lines are commands too. Used by tests/test_unit_docs.py (which classifies every command) and
tests/test_integration_docs.py (which runs the ones that can run here).
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = ('README.md', 'CONTRIBUTING.md')

# The Agent's embedded Python, as the README writes it; a test runs such a command with its own interpreter.
AGENT_PYTHON = '/opt/datadog-agent/embedded/bin/python'
PYTHONS = ('python', 'python3', AGENT_PYTHON)
# A tox environment's Python (`.tox/py311/bin/python`): the tests already run inside one.
TOX_PYTHON = re.compile(r'\.tox/\w+/bin/python')
PLACEHOLDER = re.compile(r'<[A-Z][A-Z_]*>')

_FENCE = re.compile(r'^\s*```(\w*)\s*$')


def shell_commands(markdown: str) -> list[str]:
    """Every command of the ```shell blocks of `markdown`, in order (indented blocks in list items included)."""
    commands: list[str] = []
    in_shell = in_other = False
    pending = ''
    for line in markdown.splitlines():
        fence = _FENCE.match(line)
        if fence and not (in_shell or in_other):
            in_shell, in_other = fence.group(1) == 'shell', fence.group(1) != 'shell'
            continue
        if fence and not fence.group(1):
            in_shell = in_other = False
            continue
        if not in_shell:
            continue
        text = line.strip()
        if text.endswith('\\'):
            pending += text[:-1].strip() + ' '
            continue
        command = _drop_comment(pending + text).strip()
        pending = ''
        if command:
            commands.append(command)
    return commands


def _drop_comment(line: str) -> str:
    """`line` without a trailing `# comment`: a # that starts a word outside quotes, as the shell reads it."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in '\'"':
            quote = char
        elif char == '#' and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def documented_commands() -> dict[str, list[str]]:
    """Every command of the docs, with the documents that show it (a command may be in both)."""
    found: dict[str, list[str]] = {}
    for doc in DOCS:
        for command in shell_commands((REPO / doc).read_text()):
            found.setdefault(command, [])
            if doc not in found[command]:
                found[command].append(doc)
    return found


def documented(start: str) -> str:
    """The one documented command that starts with `start`: a test runs what the docs say, not a copy of it."""
    matches = [c for c in documented_commands() if c.startswith(start)]
    assert len(matches) == 1, 'expected one documented command starting with %r, found %r' % (start, matches)
    return matches[0]


def documented_all(start: str) -> list[str]:
    matches = [c for c in documented_commands() if c.startswith(start)]
    assert matches, 'no documented command starts with %r' % start
    return matches


def placeholders(command: str) -> set[str]:
    return set(PLACEHOLDER.findall(command))


def without_sudo(argv: list[str]) -> list[str]:
    """`argv` without a leading `sudo -u USER [--preserve-env=...]`: the tests run as the user they run as."""
    if argv[:1] != ['sudo']:
        return argv
    rest = argv[1:]
    while rest and rest[0].startswith('-'):
        option = rest.pop(0)
        if option == '-u':
            rest.pop(0)
    return rest


def argv_for(command: str, substitutions: dict[str, str] | None = None) -> list[str]:
    """The argv a test runs for a documented command: without sudo, this test's Python for `python`, `python3`, the
    Agent's Python and a tox environment's, and each substitution (a placeholder, or a path of an Agent host) made."""
    substitutions = substitutions or {}
    argv = without_sudo(shlex.split(command))
    if argv[0] in PYTHONS or TOX_PYTHON.fullmatch(argv[0]):
        argv[0] = sys.executable
    replaced = []
    for word in argv:
        for old, new in substitutions.items():
            word = word.replace(old, new)
        replaced.append(word)
    left = sorted(set().union(*(placeholders(w) for w in replaced)))
    assert not left, 'a test must substitute %s in %r' % (', '.join(left), command)
    return replaced
