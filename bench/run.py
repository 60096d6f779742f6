"""Run every benchmark in bench/ (each a module with `main() -> int`) one after another: `make bench`.

Each benchmark measures its anchor in the same run and prints ratios. `python bench/run.py NAME` runs one.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main(argv: list[str]) -> int:
    names = argv or sorted(p.stem for p in HERE.glob("*.py") if p.stem not in {"run", "__init__"})
    failed = 0
    for name in names:
        path = HERE / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        if spec is None or spec.loader is None:
            print(f"bench: no benchmark named {name}", file=sys.stderr)
            failed += 1
            continue
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"\n=== bench/{name}.py ===", flush=True)
        failed += int(module.main() != 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    raise SystemExit(main(sys.argv[1:]))
