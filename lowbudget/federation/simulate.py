"""Every role of a federation on one machine: a server and a site per folder, as processes.

Each role runs in its own process exactly as on separate machines (``lowbudget federate server``
and ``lowbudget federate site``, talking over Flower's gRPC on the loopback), so a simulation
exercises the same code, messages and failure handling as a real federation. Their output is
shown line by line, prefixed with the role. The CPU threads are shared out among the sites.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from lowbudget.errors import FederationError
from lowbudget.federation.config import FederationConfig
from lowbudget.progress import plural

_AFTER_SERVER = 60.0  # seconds the sites get to leave once the server is done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def simulate(recipe: Path, sites: list[Path], cfg: FederationConfig, *, output: Path, options: Sequence[str] = (),
             seed: int = 0, resume: bool = False, log: Callable[[str], None] = print) -> int:
    """Run a server and one site per folder in ``sites``; return the server's exit code.

    ``options`` (``--base``, ``--set ...``) go to every role; site i is named ``site i`` and trains
    with ``optim.seed = seed + i``, so sites do not draw the same noise.
    """
    if len(sites) < cfg.min_sites:
        raise FederationError(f"{plural(len(sites), '--site folder')}, fewer than --min-sites {cfg.min_sites}")
    address = f"127.0.0.1:{free_port()}"
    threads = str(max(1, (os.cpu_count() or 1) // len(sites)))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads),
           "PYTHONUNBUFFERED": "1"}  # each line as it happens, not when a buffer fills
    command = [sys.executable, "-m", "lowbudget", "federate"]
    relays: list[threading.Thread] = []
    server = _start(["server", str(recipe), "--address", address, "--output", str(output), *_server_options(cfg),
                     *(["--resume"] if resume else []), *options], command, env, "server", log, relays)
    members = [_start(["site", str(recipe), "--data", str(folder), "--server", address, "-q",
                       "--name", f"site {i + 1}",
                       "--set", f"optim.seed={seed + i}", *options], command, env, f"site {i + 1}", log, relays)
               for i, folder in enumerate(sites)]
    try:
        code = _watch(server, members, cfg.min_sites, log)
        for member in members:  # after a finished federation the sites leave by themselves; else they are stopped
            try:
                member.wait(timeout=_AFTER_SERVER if code == 0 else 0)
            except subprocess.TimeoutExpired:
                member.kill()
    finally:
        for process in (server, *members):
            if process.poll() is None:
                process.kill()
                process.wait()
        for relay in relays:  # the last lines of every role, before returning
            relay.join(timeout=5)
    return code


def _watch(server: subprocess.Popen, members: list[subprocess.Popen], min_sites: int, log: Callable[[str], None]) -> int:
    """Wait for the server; stop it when too few sites are left for a round ever to complete."""
    while server.poll() is None:
        failed = [i for i, m in enumerate(members) if m.poll() not in (None, 0)]
        if len(members) - len(failed) < min_sites:
            log(f"simulate: {len(failed)} of {len(members)} sites stopped with an error (site "
                f"{', site '.join(str(i + 1) for i in failed)}), fewer than --min-sites {min_sites} remain; "
                "stopping the server (its state resumes with `federate server --resume`)")
            server.terminate()
            return server.wait() or 1
        time.sleep(0.5)
    return server.returncode


def _server_options(cfg: FederationConfig) -> list[str]:
    return ["--rounds", str(cfg.rounds), "--local-steps", str(cfg.local_steps), "--min-sites", str(cfg.min_sites),
            "--wait-for", str(cfg.wait_for),
            "--aggregation", cfg.aggregation, "--server-lr", repr(cfg.server_lr), "--round-timeout", repr(cfg.round_timeout)]


def _start(args: list[str], command: list[str], env: dict[str, str], role: str, log: Callable[[str], None],
           relays: list[threading.Thread]) -> subprocess.Popen:
    process = subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    def relay() -> None:
        for line in process.stdout:
            log(f"[{role}] {line.rstrip()}")

    relays.append(threading.Thread(target=relay, daemon=True))
    relays[-1].start()
    return process
