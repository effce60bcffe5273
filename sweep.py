"""Run methods x threats with their defaults and print one table of held-out gaps before -> after.

Each cell runs `python <method>.py --threat <threat> --out <out>/<threat>__<method>` exactly as a
user would (finished run folders are reused, so an interrupted sweep resumes; each run's wall time
goes to wall_seconds.txt), then reads eval_before.json / eval_after.json. Guards: the largest
drop of any capability guard.

Run:  python sweep.py                      (all 4 methods x 6 threats, ~25 minutes on 2 cores)
      python sweep.py --methods mlpct attct --extra=--window=both --tag both
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from threats import THREATS

METHODS = ("bct", "act", "mlpct", "attct")
ROOT = Path(__file__).resolve().parent


def cell(run: Path) -> str:
    before = json.loads((run / "eval_before.json").read_text())["metrics"]
    after = json.loads((run / "eval_after.json").read_text())["metrics"]
    summary = json.loads((run / "summary.json").read_text())
    threat = next(iter(before))
    b, a = before[threat]["heldout"]["gap"], after[threat]["heldout"]["gap"]
    drop = max((before[threat]["capability"][g] - after[threat]["capability"][g]
                for g in before[threat]["capability"]), default=0.0)
    text = f"{b:+.2f} → {a:+.2f}"
    if summary["steps_trained"] == 0:
        return text + " (no signal)"
    return text + (f" (guard −{drop:.2f})" if drop > 0.005 else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--threats", nargs="+", default=list(THREATS), choices=THREATS)
    p.add_argument("--out", type=Path, default=Path("runs/sweep"))
    p.add_argument("--extra", default="", help="extra flags passed to every method, e.g. --extra=--window=both")
    p.add_argument("--tag", default="", help="suffix of the run folders (to keep ablations apart)")
    args = p.parse_args()
    for threat in args.threats:
        for method in args.methods:
            run = args.out / f"{threat}__{method}{'__' + args.tag if args.tag else ''}"
            if not (run / "eval_after.json").exists():
                start = time.time()
                subprocess.run([sys.executable, str(ROOT / f"{method}.py"), "--threat", threat, "--out", str(run),
                                *args.extra.split()], check=True, stdout=subprocess.DEVNULL)
                (run / "wall_seconds.txt").write_text(f"{time.time() - start:.1f}\n")
                print(f"{threat} {method}: {time.time() - start:.0f}s", file=sys.stderr)
    print("held-out gap (wrapped rate − clean rate) before → after; guard: largest drop of a capability guard")
    print("| threat | " + " | ".join(args.methods) + " |\n|---|" + "---|" * len(args.methods))
    for threat in args.threats:
        cells = [cell(args.out / f"{threat}__{m}{'__' + args.tag if args.tag else ''}") for m in args.methods]
        print(f"| {threat} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
