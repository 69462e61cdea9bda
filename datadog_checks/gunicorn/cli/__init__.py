"""Command-line tools, `python -m datadog_checks.gunicorn [diagnose | assets] ...`: the runner, diagnose and the assets
installer. They import the check's modules; the check never imports them."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """The subcommand named first, else the runner. Each tool is imported only when asked for."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['diagnose']:
        from .diagnose import main as tool
    elif argv[:1] == ['assets']:
        from .assets.command import main as tool
    else:
        from .runner import main as runner

        return runner(argv)
    return tool(argv[1:])
