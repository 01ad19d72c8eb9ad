"""The server of a federation: the starting tensors, the rounds, a checkpoint per round, the file.

It loads the base and attaches the recipe's adapters exactly as training does, so the tensors
every site starts from are the ones a local run starts from (the token initialised from its
``init`` word, LoRA's B at zero). Flower's gRPC server then runs the rounds with the checked
strategy; after each aggregation the global tensors, the sites seen and FedAdam's moments go
to ``federation/state.safetensors`` (atomically), which ``--resume`` continues from. At the end
the tensors are written as ordinary adapter files whose header records the federation.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from flwr.server import ServerConfig, start_server
from safetensors import safe_open
from safetensors.numpy import save_file

from lowbudget.adapters import own_files
from lowbudget.errors import FederationError
from lowbudget.federation.config import FederationConfig
from lowbudget.federation.strategy import Ledger, make_strategy
from lowbudget.federation.tensors import Layout, layout_of, load_into, to_arrays
from lowbudget.io import atomic_write, atomic_write_text, output_folder
from lowbudget.progress import plural
from lowbudget.recipe import Recipe
from lowbudget.training.loop import write_adapters
from lowbudget.training.setup import attach_adapters, frozen_base

STATE = Path("federation") / "state.safetensors"
_KEPT_ON_RESUME = ("local_steps", "aggregation", "server_lr")  # they shape the trajectory so far


@dataclass
class ServerState:
    round: int  # the last round aggregated (0: none yet)
    arrays: list[np.ndarray]  # the global tensors, in the layout's order
    sites: list[dict[str, Any]]
    config: dict[str, Any]
    moments: tuple[list[np.ndarray], list[np.ndarray]] | None = None  # FedAdam's m_t, v_t


@dataclass
class FederationResult:
    output_dir: Path
    files: list[Path]
    rounds: int
    sites: list[dict[str, Any]]


def serve(recipe: Recipe, cfg: FederationConfig, *, address: str = "127.0.0.1:8080", resume: bool = False,
          overwrite: bool = False, certificates: tuple[bytes, bytes, bytes] | None = None,
          log: Callable[[str], None] = print) -> FederationResult:
    """Run the federation's server on ``address`` until ``cfg.rounds`` rounds are aggregated.

    ``certificates`` (CA certificate, server certificate, server key; PEM) make the connection TLS.
    """
    out = Path(recipe.output.dir).expanduser()
    state = _claim(out, cfg, resume, overwrite, log)
    base = frozen_base(recipe, torch.device("cpu"), torch.float32)  # the server trains nothing
    fingerprint = base.fingerprint  # before the tokens are added, as training takes it
    bank, _, trainable = attach_adapters(base, recipe.method, recipe.optim.seed)
    layout = layout_of(trainable)
    if state is None:
        state = ServerState(0, to_arrays(trainable, layout), [], dataclasses.asdict(cfg))
        atomic_write_text(out / "recipe.toml", recipe.to_toml())
    elif len(state.arrays) != len(layout) or any(a.shape != s for a, (_, s) in zip(state.arrays, layout)):
        raise FederationError(f"'{out / STATE}' holds other tensors than this recipe makes; resume with the recipe it "
                              "started with")
    log(f"federation: {plural(cfg.rounds, 'round')} of {plural(cfg.local_steps, 'local step')}, {cfg.aggregation}, "
        f"at least {plural(cfg.min_sites, 'site')} a round; {plural(len(layout), 'tensor')} "
        f"({sum(int(np.prod(s)) for _, s in layout):,} values) on {address}" + (", TLS" if certificates else ""))
    ledger = Ledger(state.sites)
    if state.round < cfg.rounds:
        def saved(r: int, arrays: list[np.ndarray], strategy: Any) -> None:
            moments = (strategy.m_t, strategy.v_t) if cfg.aggregation == "fedadam" else None
            _save_state(out, ServerState(r, arrays, ledger.sites, dataclasses.asdict(cfg), moments), layout)

        strategy = make_strategy(cfg, layout=layout, start=state.arrays, fingerprint=fingerprint, ledger=ledger,
                                 first_round=state.round + 1, moments=state.moments, on_round=saved, log=log)
        start_server(server_address=address, strategy=strategy, certificates=certificates,
                     config=ServerConfig(num_rounds=cfg.rounds - state.round, round_timeout=cfg.round_timeout))
        state = _load_state(out, layout) if (out / STATE).is_file() else state
    if not _counted(state):
        raise FederationError(f"no site's update was aggregated in {plural(state.round, 'round')}; nothing to write "
                              "(the lines above say what each round received)")
    load_into(trainable, state.arrays, layout)
    files = write_adapters(out, base, bank, recipe, _provenance(base.name, fingerprint, recipe, cfg, state))
    log(f"federation done: {plural(state.round, 'round')}, updates from {plural(len(_counted(state)), 'site')}")
    return FederationResult(out, files, state.round, _counted(state))


def _counted(state: ServerState) -> list[dict[str, Any]]:
    """The sites whose updates were aggregated at least once (a site whose every update was rejected gave nothing)."""
    return [s for s in state.sites if s["rounds"]]


def _provenance(base_name: str, fingerprint: str, recipe: Recipe, cfg: FederationConfig,
                state: ServerState) -> own_files.Provenance:
    sites = _counted(state)
    federation = {"sites": [{"site": s["site"], "images": s["images"], "rounds": s["rounds"]} for s in sites],
                  "rounds": state.round, "local_steps": cfg.local_steps, "aggregation": cfg.aggregation,
                  "min_sites": cfg.min_sites, **({"server_lr": cfg.server_lr} if cfg.aggregation == "fedadam" else {})}
    return own_files.Provenance(
        base_name=base_name, base_fingerprint=fingerprint, modality=recipe.data.modality,
        n_images=sum(s["images"] for s in sites), steps=state.round * cfg.local_steps, recipe=recipe.shareable_dict(),
        description=recipe.output.description, license=recipe.output.license, federation=federation,
    )


def _claim(out: Path, cfg: FederationConfig, resume: bool, overwrite: bool,
           log: Callable[[str], None]) -> ServerState | None:
    """The output folder under the rule for outputs; the state to resume from, or None for a new federation."""
    if (out / STATE).is_file() and not resume:
        raise FederationError(f"'{out}' already holds a federation; pass --resume to continue it or choose another --output")
    if not resume:
        output_folder(out, overwrite=overwrite, command="federate server")
        return None
    if not (out / STATE).is_file():
        raise FederationError(f"--resume: no federation state at '{out / STATE}'; start without --resume")
    state = _load_state(out, None)
    changed = [f"--{k.replace('_', '-')} was {state.config[k]!r}, now {getattr(cfg, k)!r}" for k in _KEPT_ON_RESUME
               if state.config.get(k) != getattr(cfg, k)]
    if changed:
        raise FederationError(f"--resume: {changed[0]}; a resumed federation keeps its local steps and aggregation")
    if cfg.rounds < state.round:
        raise FederationError(f"--resume: --rounds {cfg.rounds} is below the {state.round} rounds already aggregated")
    log(f"resuming after round {state.round} of {cfg.rounds}")
    return state


def _save_state(out: Path, state: ServerState, layout: Layout) -> None:
    tensors = {f"global/{name}": a for (name, _), a in zip(layout, state.arrays)}
    if state.moments is not None:
        for part, values in zip(("m", "v"), state.moments):
            tensors |= {f"adam_{part}/{name}": np.asarray(a, np.float32) for (name, _), a in zip(layout, values)}
    meta = {"round": str(state.round), "sites": json.dumps(state.sites), "config": json.dumps(state.config),
            "layout": json.dumps([name for name, _ in layout])}
    atomic_write(out / STATE, lambda tmp: save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp),
                                                    metadata=meta))


def _load_state(out: Path, layout: Layout | None) -> ServerState:
    try:
        with safe_open(str(out / STATE), framework="numpy") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        names = json.loads(meta["layout"])
        arrays = [tensors[f"global/{n}"] for n in names]
        moments = None
        if f"adam_m/{names[0]}" in tensors:
            moments = ([tensors[f"adam_m/{n}"] for n in names], [tensors[f"adam_v/{n}"] for n in names])
        state = ServerState(int(meta["round"]), arrays, json.loads(meta["sites"]), json.loads(meta["config"]), moments)
    except Exception as exc:  # a file lowbudget did not write, or one cut short outside its atomic write
        raise FederationError(f"'{out / STATE}' cannot be read as a federation state ({type(exc).__name__})") from exc
    if layout is not None and names != [name for name, _ in layout]:
        raise FederationError(f"'{out / STATE}' holds tensors {names[:3]}..., this recipe makes others")
    return state
