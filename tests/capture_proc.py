"""Copy the proc files the check reads for a process tree into tests/fixtures/proc (never environ or fd).

python tests/capture_proc.py MASTER_PID [DEST]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FILES = ('stat', 'cmdline', 'comm', 'schedstat', 'statm', 'status')


def capture(pid: int, dest: Path) -> list[int]:
    src = Path('/proc') / str(pid)
    out = dest / str(pid)
    (out / 'task').mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (out / name).write_bytes((src / name).read_bytes())
    children: list[int] = []
    for tid in os.listdir(src / 'task'):
        data = (src / 'task' / tid / 'children').read_bytes()
        (out / 'task' / tid).mkdir(exist_ok=True)
        (out / 'task' / tid / 'children').write_bytes(data)
        children += [int(c) for c in data.split()]
    return children


def main() -> None:
    dest = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).parent / 'fixtures' / 'proc'
    todo = [int(sys.argv[1])]
    while todo:
        todo += capture(todo.pop(), dest)


if __name__ == '__main__':
    main()
