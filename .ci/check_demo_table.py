"""CI: the table `make demo` just printed (results/demo/table.txt) must be the one the README shows."""

from __future__ import annotations

import sys
from pathlib import Path


def readme_table(readme: str) -> str:
    """The README's fenced block whose first line is the demo table's header."""
    blocks: list[list[str]] = []
    inside = False
    for line in readme.splitlines():
        if line.startswith("```"):
            inside = not inside
            if inside:
                blocks.append([])
        elif inside:
            blocks[-1].append(line)
    for block in blocks:
        if block and block[0].startswith("run ") and "mIoU" in block[0]:
            return "\n".join(block).strip()
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
