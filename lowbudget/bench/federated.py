"""Many sites, one token: each site alone, all images pooled, and a federation, on the phantom world.

Four sites hold 25 images each of one finding, acquired by four different scanners
(:mod:`lowbudget.phantoms.scanners`). The same token is trained (a) by each site alone on its
25 images, (b) on all 100 pooled in one place -- what sharing the images would give -- and (c)
by a federation of the four (``lowbudget federate simulate``: a server and four site processes
over the loopback), whose rounds x local steps equal the others' steps. Per global step the
federation's four sites together see four batches, so (b) is also trained with a four times
larger batch: the same images per step, in one place. Each is scored by the
finding's detector on images generated from its token. The detectors read every scanner's
phantoms alike (rate 1.00 with the finding, 0.00 without, on each style), so one reading of the
generated images serves every site's style.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from lowbudget.bench.fidelity import Sampling, TokenSpec, fidelity, finished, token_recipe, train_finding
from lowbudget.bench.tables import markdown_table
from lowbudget.errors import FederationError
from lowbudget.federation import FederationConfig, simulate
from lowbudget.io import atomic_write_text
from lowbudget.phantoms.scanners import SCANNERS
from lowbudget.phantoms.world import write_phantoms


@dataclass
class FederatedConfig:
    finding: str = "lesion"  # one site alone does not saturate it (the lesion sweep's small cells: 0.62-0.81)
    sites: tuple[str, ...] = ("bright", "dim", "noisy", "soft")  # a scanner per site
    per_site: int = 25
    n_vectors: int = 1
    steps: int = 300  # every condition's optimiser steps: the federation's rounds x local steps
    rounds: int = 10
    seeds: tuple[int, ...] = (0, 1, 2)
    n_eval: int = 16


def federated(cfg: FederatedConfig, output: Path, sampling: Sampling, log: Callable[[str], None],
              base: str = "") -> tuple[list[str], dict]:
    """Rows of the federated table (markdown lines) and their figures; ``base``: as TokenSpec.base."""
    folders = _site_folders(cfg, output / "data")
    pooled = _pooled(folders, output / "data" / "pooled")
    rates: dict[str, list[float]] = {}
    for seed in cfg.seeds:
        spec = TokenSpec(cfg.finding, n_vectors=cfg.n_vectors, steps=cfg.steps, seed=seed, base=base)
        for k, (name, folder) in enumerate(folders.items()):
            files = train_finding(replace(spec, seed=seed + k), output / f"alone-{name}-{seed}", data=folder)
            rates.setdefault(f"{name} alone", []).append(_rate(spec, files, cfg, sampling))
        rates.setdefault("pooled", []).append(_rate(spec, train_finding(spec, output / f"pooled-{seed}", data=pooled), cfg,
                                                    sampling))
        # the federation's sites together see len(sites) batches per global step: pooled with that batch too
        wide = replace(spec, batch_size=spec.batch_size * len(folders))
        rates.setdefault(f"pooled, batch {wide.batch_size}", []).append(
            _rate(spec, train_finding(wide, output / f"pooled-batch{wide.batch_size}-{seed}", data=pooled), cfg, sampling))
        rates.setdefault("federated", []).append(_rate(spec, _federation(spec, cfg, folders, output / f"federated-{seed}", log),
                                                       cfg, sampling))
        log(f"  seed {seed}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rates.items()))
    return _table(cfg, rates), {"rates": rates}


def _site_folders(cfg: FederatedConfig, root: Path) -> dict[str, Path]:
    folders = {}
    for k, name in enumerate(cfg.sites):
        folders[name] = root / name
        if not (folders[name] / "metadata.jsonl").is_file():
            write_phantoms(folders[name], "prostate", cfg.finding, n=cfg.per_site, seed=5000 + k, scanner=SCANNERS[name])
    return folders


def _pooled(folders: dict[str, Path], pooled: Path) -> Path:
    """Every site's images in one folder, as if the sites had sent them to one place."""
    if not (pooled / "metadata.jsonl").is_file():
        pooled.mkdir(parents=True, exist_ok=True)
        lines = []
        for name, folder in folders.items():
            for line in (folder / "metadata.jsonl").read_text().splitlines():
                lines.append(line.replace('"file_name": "', f'"file_name": "{name}-'))
            for image in folder.glob("*.png"):
                shutil.copyfile(image, pooled / f"{name}-{image.name}")
        atomic_write_text(pooled / "metadata.jsonl", "\n".join(lines) + "\n")
    return pooled


def _federation(spec: TokenSpec, cfg: FederatedConfig, folders: dict[str, Path], out: Path,
                log: Callable[[str], None]) -> list[Path]:
    done = finished(out)
    if done:
        return done
    recipe_file = out.parent / f"{out.name}.toml"
    atomic_write_text(recipe_file, token_recipe(spec, out, data=next(iter(folders.values()))).to_toml())
    fed = FederationConfig(rounds=cfg.rounds, local_steps=cfg.steps // cfg.rounds, min_sites=len(folders),
                           wait_for=len(folders))
    lines: list[str] = []
    code = simulate(recipe_file, list(folders.values()), fed, output=out, seed=spec.seed, log=lines.append)
    if code:
        raise FederationError(f"the federation in '{out}' stopped with exit code {code}: " + " | ".join(lines[-5:]))
    return finished(out)


def _rate(spec: TokenSpec, files: list[Path], cfg: FederatedConfig, sampling: Sampling) -> float:
    return fidelity(spec, files, n=cfg.n_eval, sampling=sampling, kinds=("token",))["rates"]["token"]


def _table(cfg: FederatedConfig, rates: dict[str, list[float]]) -> list[str]:
    alone = np.array([rates[f"{name} alone"] for name in cfg.sites])  # (sites, seeds)
    summary = {**{k: v for k, v in rates.items() if k.endswith("alone")}, "mean of the sites alone": list(alone.mean(0)),
               **{k: v for k, v in rates.items() if k.startswith("pooled")}, "federated": rates["federated"]}
    rows = [[k, f"{np.mean(v):.2f} ± {np.std(v):.2f}", ", ".join(f"{x:.2f}" for x in v)] for k, v in summary.items()]
    fed, pool, mean_alone = (float(np.mean(summary[k])) for k in ("federated", "pooled", "mean of the sites alone"))
    claims = [f"federated >= pooled - 0.05: {fed:.2f} vs {pool - 0.05:.2f}, {'holds' if fed >= pool - 0.05 else 'does not hold'}",
              f"federated > mean of the sites alone: {fed:.2f} vs {mean_alone:.2f}, "
              f"{'holds' if fed > mean_alone else 'does not hold'}"]
    wide = next(k for k in summary if k.startswith("pooled, batch"))
    claims.append(f"federated against {wide} (the same images per global step): {fed:.2f} vs {np.mean(summary[wide]):.2f}")
    notes = [f"{cfg.finding}, TI with {cfg.n_vectors} vector(s), {cfg.steps} steps each; {cfg.per_site} images per site, "
             f"scanners {', '.join(cfg.sites)}; federated: {cfg.rounds} rounds x {cfg.steps // cfg.rounds} local steps, "
             f"FedAvg; detector rate on {cfg.n_eval} generated images per token; mean ± std over training seeds "
             f"{', '.join(map(str, cfg.seeds))}."]
    return markdown_table(["training", "detector rate", "per seed"], rows) + [""] + notes + [""] + [f"- {c}" for c in claims]
