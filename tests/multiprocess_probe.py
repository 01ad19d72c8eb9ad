"""Run by tests/test_multiprocess.py under torchrun: train a recipe in every process and print,
per process, what the test checks. ``die`` kills the main process right after its first
checkpoint (the launcher then stops the others), as a crash or a pre-empted job would."""

import hashlib
import os
import sys

from accelerate import PartialState

import lowbudget.training.loop as loop
from lowbudget.recipe import load_recipe

recipe_path, mode = sys.argv[1], sys.argv[2]
written = []
real_written, real_save = loop._written, loop.checkpoint.save_checkpoint
loop._written = lambda run, done: (written.append(real_written(run, done)), written[-1])[1]


def save_then_die(out, **kw):
    real_save(out, **kw)
    raise SystemExit(3)


if mode == "die":
    loop.checkpoint.save_checkpoint = save_then_die
result = loop.train(load_recipe(recipe_path), resume=mode == "resume", progress=False, log=lambda m: None)
state = PartialState()
tokens = written[-1][0]["tokens"].detach().cpu().numpy()
line = (f"process {state.process_index} of {state.num_processes} {state.distributed_type.value} "
        f"files {len(result.files)} tokens {hashlib.sha256(tokens.tobytes()).hexdigest()[:16]} "
        f"losses {','.join(f'{v:.6f}' for v in result.losses)}\n")
os.write(1, line.encode())  # one write: the two processes' lines never interleave
