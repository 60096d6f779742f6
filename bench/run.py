"""Run every benchmark in bench/ (each a module with `main() -> int`) one after another: `make bench`.

Each benchmark measures its anchor in the same run and prints ratios. `python bench/run.py NAME` runs one.
Modules whose name starts with `_` are helpers of a benchmark, not benchmarks. A benchmark that raises is
reported and counted as failed; the others still run.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).parent


def main(argv: list[str]) -> int:
    names = argv or sorted(
        p.stem for p in HERE.glob("*.py") if p.stem != "run" and not p.stem.startswith("_")
    )
    failed = []
    for name in names:
        path = HERE / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        if not path.is_file() or spec is None or spec.loader is None:
            print(f"bench: no benchmark named {name}", file=sys.stderr)
            failed.append(name)
            continue
        print(f"\n=== bench/{name}.py ===", flush=True)
        try:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            code = module.main()
        except Exception:
            traceback.print_exc()
            code = 1
        if code != 0:
            failed.append(name)
    if failed:
        print(f"\nbench: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(1, str(HERE))  # the benchmarks' helper modules (bench/_*.py)
    raise SystemExit(main(sys.argv[1:]))
