"""``python -m marrow_abm.claims --out DIR [--quick] [--topic aml] [--workers K] [--set KEY=VALUE]...
[--seed S]``."""

import argparse
import sys

from . import run_claims


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m marrow_abm.claims")
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--topic", action="append")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args(argv)
    overrides = a.overrides + ([f"run.seed={a.seed}"] if a.seed is not None else [])
    results = run_claims(a.out, quick=a.quick, workers=a.workers, only=a.topic,
                         overrides=overrides)
    failed = [r.id for rs in results.values() for r in rs if not r.passed]
    print(f"report: {a.out}/validation.md; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
