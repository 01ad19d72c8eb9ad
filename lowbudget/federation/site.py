"""A site of a federation: its images, its base, lowbudget's training loop; only tensors leave.

The site sets up once, when the first round arrives (data, frozen base, adapters, latents:
the same :func:`~lowbudget.training.setup.set_up` a local run uses, with the federation's
total steps as the budget). Each round it copies the global tensors into its adapters, starts
its optimiser afresh, and runs the round's steps of the one loop
(:func:`~lowbudget.training.loop.run_steps`): round r of a federation with E local steps is
global steps (r-1)E .. rE-1, so the learning-rate schedule, pivotal tuning's switch and the
random draws follow the federation's step count. It returns the tensors, its image count,
its name if given, its mean loss and its base's vocabulary fingerprint: never an image, a
latent, a caption or a path.
"""

from __future__ import annotations

import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import grpc
import numpy as np
from flwr.client import NumPyClient, start_client
from flwr.common import Scalar

from lowbudget.errors import FederationError
from lowbudget.federation.tensors import layout_from_json, layout_of, load_into, to_arrays
from lowbudget.progress import Progress, plural
from lowbudget.recipe import Recipe
from lowbudget.training.loop import reproducible, run_steps
from lowbudget.training.setup import Run, set_up


def join(recipe: Recipe, server: str, *, name: str = "", wait: float = 300.0, root_certificate: bytes | None = None,
         progress: bool = True, log: Callable[[str], None] = print) -> int:
    """Take part in the federation at ``server`` (HOST:PORT) until it ends; return the rounds trained.

    ``root_certificate`` (PEM): the CA that signed the server's certificate; the connection is TLS.
    """
    site = Site(recipe, name=name, progress=progress, log=log)
    _wait_for(server, wait)  # Flower's gRPC client gives up at once on a server not yet listening
    log(f"joining the federation at {server}" + (f" as {name!r}" if name else ""))
    try:
        with reproducible(recipe.optim.deterministic):
            start_client(server_address=server, client=site.to_client(), insecure=root_certificate is None,
                         root_certificates=root_certificate, max_wait_time=wait)
    except grpc.RpcError as exc:
        if not site.rounds:  # never got a round: most often TLS on one side only, or another CA
            raise FederationError(f"the server at {server} accepted the connection but no federation came of it "
                                  f"({exc.code().name}); if the server uses TLS give --tls-ca, with the CA that "
                                  "signed its certificate (and not otherwise)") from None
        raise FederationError(f"lost the server at {server} after {plural(site.rounds, 'round')} "
                              f"({exc.code().name}); start this site again to rejoin") from None
    if not site.rounds:
        raise FederationError(f"no round came from the server at {server} (not reachable within {wait:g} s, "
                              "or it ended without this site)")
    log(f"the federation ended; this site trained {plural(site.rounds, 'round')}")
    return site.rounds


def _wait_for(server: str, wait: float) -> None:
    """Until ``server`` (HOST:PORT) accepts a connection, or ``wait`` seconds have passed."""
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit():
        raise FederationError(f"--server {server!r} is not HOST:PORT, e.g. 127.0.0.1:8080")
    deadline = time.monotonic() + wait
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise FederationError(f"no server answers at {server} (tried for {wait:g} s); start "
                                      "`lowbudget federate server` there first, or check the address") from None
            time.sleep(0.5)


def site_recipe(recipe: Recipe, total_steps: int) -> tuple[Recipe, list[str]]:
    """The recipe as a site trains it: the federation's step budget, and nothing that writes or holds
    out images (validation, early stopping, EMA, checkpoints are the server's business or meaningless
    per round); with the settings that were dropped, for a note."""
    dropped = [f"{table}.{key}" for table, key, off in (
        ("optim", "stop", "fixed"), ("optim", "ema_decay", 0.0), ("output", "validation_every", 0),
        ("output", "validation_prompts", []), ("data", "validation_fraction", 0.0), ("data", "validation_path", ""),
    ) if getattr(getattr(recipe, table), key) != off]
    site = replace(recipe, optim=replace(recipe.optim, max_steps=total_steps, stop="fixed", ema_decay=0.0),
                   output=replace(recipe.output, validation_every=0, validation_prompts=[], checkpoint_every=0),
                   data=replace(recipe.data, validation_fraction=0.0, validation_path=""))
    return site, dropped


class Site(NumPyClient):
    def __init__(self, recipe: Recipe, *, name: str, progress: bool, log: Callable[[str], None]) -> None:
        self.recipe, self.name, self.progress, self.log = recipe, name, progress, log
        self.run: Run | None = None
        self.rounds = 0

    def get_parameters(self, config: dict[str, Scalar]) -> list[np.ndarray]:
        raise FederationError("the server sends the starting tensors; a site never provides them")

    def fit(self, parameters: list[np.ndarray], config: dict[str, Scalar]) -> tuple[list[np.ndarray], int, dict[str, Scalar]]:
        r, local = int(config["round"]), int(config["local_steps"])
        layout = layout_from_json(str(config["layout"]))
        run = self._set_up(int(config["rounds"]) * local, str(config["fingerprint"]), layout)
        load_into(run.trainable, parameters, layout)
        run.optimizer.state.clear()  # each round starts from the global tensors: no moments from the last one
        before = len(run.losses)
        bar = Progress(local, f"round {r}", enabled=self.progress)
        run_steps(run, self.recipe, range((r - 1) * local, r * local), bar=bar, out=Path(self.recipe.output.dir),
                  log=self.log)
        bar.close()
        loss = float(np.mean(run.losses[before:]))
        self.rounds += 1
        self.log(f"round {r}: trained {plural(local, 'step')} on {plural(run.n_images, 'image')}, mean loss {loss:.4f}; "
                 f"sending {plural(len(layout), 'tensor')}")
        metrics: dict[str, Scalar] = {"loss": loss, "fingerprint": run.fingerprint, "site": self.name}
        return to_arrays(run.trainable, layout), run.n_images, metrics

    def _set_up(self, total_steps: int, fingerprint: str, layout: list) -> Run:
        if self.run is None:
            self.recipe, dropped = site_recipe(self.recipe, total_steps)
            if dropped:
                self.log(f"note: a federated site trains without {', '.join(dropped)} (set in the recipe)")
            self.run = set_up(self.recipe, Path(self.recipe.output.dir), False, self.log)
        if self.run.fingerprint != fingerprint:
            raise FederationError(f"this site's base (vocabulary fingerprint {self.run.fingerprint:.12}) is not the "
                                  f"server's ({fingerprint:.12}); every site trains on the same base")
        mine = layout_of(self.run.trainable)
        if mine != layout:
            raise FederationError(f"the server trains {_shapes(layout)}, this site's recipe makes {_shapes(mine)}; "
                                  "every site uses the server's [method] table")
        return self.run


def _shapes(layout: list) -> str:
    return ", ".join(f"{name} {tuple(shape)}" for name, shape in layout[:3]) + (" ..." if len(layout) > 3 else "")
