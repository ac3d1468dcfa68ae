"""CI: the table `make demo` just printed (results/demo/table.txt) must be the one the README shows."""

from __future__ import annotations

import re
import sys
from pathlib import Path


def readme_table(readme: str) -> str:
    """The first fenced block of the README whose first line is the demo table's header."""
    for block in re.findall(r"```\n(.*?)```", readme, flags=re.S):
        if block.startswith("run ") and "mIoU" in block.splitlines()[0]:
            return block.strip()
    raise SystemExit("README.md has no demo table block")


def main() -> int:
    table = Path(sys.argv[1]).read_text(encoding="utf-8").strip()
    expected = readme_table(Path(sys.argv[2]).read_text(encoding="utf-8"))
    if table != expected:
        print(f"demo table differs from the README's:\n--- README\n{expected}\n--- make demo\n{table}")
        return 1
    print("demo table matches the README")
    return 0


if __name__ == "__main__":
    sys.exit(main())
