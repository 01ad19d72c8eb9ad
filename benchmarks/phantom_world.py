"""The paper in miniature on the phantom world (the same as `lowbudget phantom benchmark`).

Every figure is a detector rate or a classifier AUC measured on images lowbudget generated
with the embedded phantom base (or --base); results.md (tables with each section's wall time),
results.json and PNG strips go to --output.

    python benchmarks/phantom_world.py --quick                     # effusion only, ~5 min on 2 cores
    python benchmarks/phantom_world.py                             # every section and finding
    python benchmarks/phantom_world.py --sections fidelity,compose --findings effusion,nodule
    python benchmarks/phantom_world.py --sections compose --compose-seeds 32   # tighter sampling checks
    python benchmarks/phantom_world.py --sections base,fidelity --base runs/phantom-xl-base/base  # another base
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lowbudget.bench.benchmark import SECTIONS, benchmark_config, run_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/phantom-benchmark"))
    parser.add_argument("--quick", action="store_true", help="one finding, reduced sizes")
    parser.add_argument("--sections", default="", help=f"comma-separated, from {','.join(SECTIONS)}")
    parser.add_argument("--findings", default="", help="comma-separated findings (default: all)")
    parser.add_argument("--compose-seeds", type=int, default=0,
                        help="interpolation seeds (combination and inpainting use twice as many; default 8)")
    parser.add_argument("--base", default="", help="a base pretrained on phantoms (default: the embedded one)")
    args = parser.parse_args()
    findings = tuple(args.findings.split(",")) if args.findings else ()
    cfg = benchmark_config(quick=args.quick, findings=findings, compose_seeds=args.compose_seeds, base=args.base)
    sections = tuple(args.sections.split(",")) if args.sections else None
    print(run_benchmark(args.output, cfg, sections=sections).read_text())


if __name__ == "__main__":
    main()
