"""Several processes, one adapter: `torchrun --nproc_per_node 2 -m lowbudget train` on CPU (gloo),
the way `accelerate launch` runs it on several GPUs."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import replace

import torch

from helpers import ROOT, tiny_recipe
from lowbudget.training.loop import _DataOrder

PROBE = ROOT / "tests" / "multiprocess_probe.py"


def _torchrun(*args, processes: int = 2) -> subprocess.CompletedProcess:
    with socket.socket() as s:  # a free port on the loopback, for the processes to meet
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                           "--master_addr", "127.0.0.1", "--master_port", str(port), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def _reports(proc: subprocess.CompletedProcess) -> dict[int, dict[str, str]]:
    found = re.findall(r"^process (\d) of (\d) (\S+) files (\d+) tokens (\w+) losses (\S+)$", proc.stdout, re.M)
    return {int(p): dict(zip(("of", "kind", "files", "tokens", "losses"), rest)) for p, *rest in found}


def test_two_cpu_processes_train_one_adapter_and_resume_after_a_crash(tiny_base, mixed_folder, tmp_path):
    recipes = {}
    for name in ("unbroken", "broken"):
        path = tmp_path / f"{name}.toml"
        path.write_text(tiny_recipe(mixed_folder, tmp_path / name, tiny_base, "ti", steps=4).to_toml())
        recipes[name] = path
    run = _torchrun(PROBE, recipes["unbroken"], "train")
    assert run.returncode == 0, run.stderr[-3000:]
    reports = _reports(run)
    assert sorted(reports) == [0, 1] and {r["of"] for r in reports.values()} == {"2"}
    assert {r["kind"] for r in reports.values()} == {"MULTI_CPU"}  # one group, not two lone processes
    assert reports[0]["files"] != "0" and reports[1]["files"] == "0"  # only the main process writes
    assert reports[0]["tokens"] == reports[1]["tokens"]  # the gradients were averaged: one adapter
    assert reports[0]["losses"] == reports[1]["losses"]  # the logged loss is the global batch's
    # the main process dies right after its step-2 checkpoint; the launcher stops the other one
    crash = _torchrun(PROBE, recipes["broken"], "die")
    assert crash.returncode != 0 and (tmp_path / "broken" / "checkpoints").is_dir()
    resumed = _torchrun(PROBE, recipes["broken"], "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _reports(resumed)[0]["tokens"] == reports[0]["tokens"]  # ends where the unbroken run ended
    assert _reports(resumed)[0]["losses"] == reports[0]["losses"]


def test_the_cli_under_a_launcher_speaks_once(tiny_base, mixed_folder, tmp_path):
    run = _torchrun("-m", "lowbudget", "train", ROOT / "recipes/phantom/chest-ti.toml", "--base", tiny_base, "--data",
                    mixed_folder, "--output", tmp_path / "o", "--max-steps", 2, "--set", "data.resolution=32",
                    "--set", "optim.batch_size=2", "--set", "output.validation_every=0")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("trained 2 steps") == 1 and run.stderr.count("data: ") == 1, run.stderr[-3000:]
    assert (tmp_path / "o" / "effusion.safetensors").is_file()


def test_each_image_once_per_epoch_across_processes():
    n, batch, processes = 10, 2, 2
    order = _DataOrder(n, seed=0, batch_size=batch, processes=processes)
    assert [list(order.global_batch(m)) for m in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert [order.share(p) for p in range(processes)] == [slice(0, 2), slice(2, 4)]  # no sample twice
    seen = order.images(range(12))
    assert sorted(seen[:n].tolist()) == list(range(n))  # the first epoch whole, then the next one begins
    one_process = _DataOrder(n, seed=0, batch_size=batch * processes, processes=1)
    assert [one_process.global_batch(m) for m in range(3)] == [order.global_batch(m) for m in range(3)]


def test_two_processes_train_what_one_process_with_twice_the_batch_trains(tiny_base, mixed_folder, tmp_path):
    """Every process draws the whole global batch's random numbers and keeps its share, so
    splitting the batch over processes changes nothing but the order of floating-point additions
    in the gradient mean."""
    from safetensors.torch import load_file

    from lowbudget.training import train

    one = tiny_recipe(mixed_folder, tmp_path / "one", tiny_base, "ti", steps=4)
    one = replace(one, optim=replace(one.optim, batch_size=4))
    train(one, progress=False, log=lambda m: None)
    path = tmp_path / "two.toml"
    path.write_text(tiny_recipe(mixed_folder, tmp_path / "two", tiny_base, "ti", steps=4).to_toml())  # batch 2 each
    run = _torchrun(PROBE, path, "train")
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = (load_file(tmp_path / name / "effusion.safetensors") for name in ("one", "two"))
    for key in a:
        # measured: 2e-8 apart, for vectors whose entries reach 0.06 and moved ~1e-2 in 4 Adam steps
        assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), (key, (a[key] - b[key]).abs().max())
