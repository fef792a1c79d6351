"""``python -m marrow_abm.claims --out DIR [--quick] [--topic aml] [--workers K] [--set KEY=VALUE]...
[--seed S] [--claim ID]...``.

``--claim`` (AML only, e.g. ``--claim A7``) re-checks some claims of the AML topic alone: only
their simulations run, and the section is written to ``DIR/aml.md`` (no ``validation.md``).
"""

import argparse
import sys
from pathlib import Path

from . import run_claims, section_markdown


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m marrow_abm.claims")
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--topic", action="append")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--claim", action="append", default=None, metavar="ID",
                   help="AML claim id(s) to re-check alone (A1 ... A7)")
    a = p.parse_args(argv)
    overrides = a.overrides + ([f"run.seed={a.seed}"] if a.seed is not None else [])
    if a.claim:
        if a.topic not in (None, ["aml"]):
            p.error("--claim selects AML claims; use it with --topic aml or no --topic")
        from . import aml

        out = Path(a.out)
        res = aml.run(out, quick=a.quick, workers=a.workers, overrides=overrides,
                      claims=a.claim)
        (out / "aml.md").write_text(section_markdown(aml.TITLE, res, out))
        failed = [r.id for r in res if not r.passed]
        print(f"report: {out}/aml.md; failed: {', '.join(failed) or 'none'}")
        return 1 if failed else 0
    results = run_claims(a.out, quick=a.quick, workers=a.workers, only=a.topic,
                         overrides=overrides)
    failed = [r.id for rs in results.values() for r in rs if not r.passed]
    print(f"report: {a.out}/validation.md; failed: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
