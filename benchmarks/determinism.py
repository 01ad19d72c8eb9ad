"""What "the same adapter" means: repeat runs, with and without ``optim.deterministic``.

Trains the demo recipe (``recipes/phantom/chest-ti.toml``: the embedded base, 100 effusion
phantoms, 4 vectors, batch 8) for ``--steps`` steps, validation off:

- twice with the default settings (all CPU threads): how far apart are the two tokens?
- twice with ``optim.deterministic = true``: are they bit-identical?
- once deterministic, stopped after its checkpoint at ``--kill-at`` and resumed: bit-identical
  to the unbroken deterministic run?

and prints the largest element-wise difference, relative to the largest value, and the
median seconds per step of each setting.

    python benchmarks/determinism.py --steps 300 --kill-at 121
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from lowbudget.recipe import load_recipe
from lowbudget.training import train

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "phantom" / "chest-ti.toml"


def run(out: Path, steps: int, deterministic: bool, *, checkpoint_every: int = 0, resume: bool = False):
    recipe = load_recipe(RECIPE, {"output.dir": str(out), "optim.max_steps": steps, "output.validation_every": 0,
                                  "output.validation_prompts": [], "output.checkpoint_every": checkpoint_every,
                                  "optim.deterministic": deterministic})
    result = train(recipe, resume=resume, progress=False, log=lambda m: None)
    return load_file(out / "effusion.safetensors")["<effusion>"], result.seconds_per_step


def compare(a: torch.Tensor, b: torch.Tensor) -> str:
    diff = float((a - b).abs().max())
    return f"bit-identical: {torch.equal(a, b)}; max |diff| {diff:.3g} ({diff / float(a.abs().max()):.3g} of max |value|)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--kill-at", type=int, default=121)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; demo recipe, {args.steps} steps")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        default = [run(tmp / f"default-{i}", args.steps, False) for i in range(2)]
        exact = [run(tmp / f"exact-{i}", args.steps, True) for i in range(2)]
        run(tmp / "resumed", args.kill_at, True, checkpoint_every=args.kill_at)  # stops after its checkpoint
        resumed = run(tmp / "resumed", args.steps, True, resume=True)
    print(f"default, run 1 vs run 2:        {compare(default[0][0], default[1][0])}")
    print(f"deterministic, run 1 vs run 2:  {compare(exact[0][0], exact[1][0])}")
    print(f"deterministic, resumed at {args.kill_at} vs unbroken: {compare(exact[0][0], resumed[0])}")
    print(f"default vs deterministic:       {compare(default[0][0], exact[0][0])}")
    print(f"median s/step: default {statistics.median(s for _, s in default):.4f}, "
          f"deterministic {statistics.median(s for _, s in exact):.4f}")


if __name__ == "__main__":
    main()
