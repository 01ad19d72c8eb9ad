"""``lowbudget federate``: a federation's server, a site, or both on one machine (Flower)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lowbudget.cli.common import Overwrite, Quiet, info, quiet_libraries, recipe_from

federate_app = typer.Typer(help="Train one adapter across sites without moving images (federated rounds over Flower).",
                           no_args_is_help=True)

Recipe = Annotated[Path, typer.Argument(help="Training recipe (TOML); every role uses the same [method] table.")]
Base = Annotated[Optional[str], typer.Option("--base", help="Base model: diffusers folder, .safetensors file, "
                                                            "embedded or embedded-xl (default: the recipe's model.base).")]
Sets = Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE", help="Override a recipe value (repeatable).")]
Rounds = Annotated[int, typer.Option("--rounds", help="Rounds to aggregate.")]
LocalSteps = Annotated[int, typer.Option("--local-steps", help="Training steps each site runs per round.")]
MinSites = Annotated[int, typer.Option("--min-sites", help="Sites a round needs; fewer usable updates keep the "
                                                            "global tensors.")]
WaitFor = Annotated[int, typer.Option("--wait-for", show_default=False,
                                      help="Sites the first round waits for (default: --min-sites).")]
Aggregation = Annotated[str, typer.Option("--aggregation", help="fedavg (weighted by image count) | fedadam.")]
ServerLr = Annotated[float, typer.Option("--server-lr", help="fedadam: the server's step size.")]
RoundTimeout = Annotated[float, typer.Option("--round-timeout", help="Seconds a round waits for a site's update.")]


def _config(rounds: int, local_steps: int, min_sites: int, wait_for: int, aggregation: str, server_lr: float,
            round_timeout: float):
    from lowbudget.federation import FederationConfig

    return FederationConfig(rounds=rounds, local_steps=local_steps, min_sites=min_sites, wait_for=wait_for,
                            aggregation=aggregation, server_lr=server_lr, round_timeout=round_timeout)


def _read(option: str, path: Optional[Path]) -> Optional[bytes]:
    from lowbudget.errors import FederationError

    if path is None:
        return None
    if not path.is_file():
        raise FederationError(f"{option} '{path}' is not a file; expected a PEM file")
    return path.read_bytes()


@federate_app.command()
def server(
    recipe: Recipe,
    rounds: Rounds = 10,
    local_steps: LocalSteps = 30,
    min_sites: MinSites = 2,
    wait_for: WaitFor = 0,
    aggregation: Aggregation = "fedavg",
    server_lr: ServerLr = 1e-3,
    round_timeout: RoundTimeout = 3600.0,
    address: Annotated[str, typer.Option("--address", help="HOST:PORT to listen on; without --tls-* the connection "
                                                           "is not encrypted (a private network or a tunnel).")]
        = "127.0.0.1:8080",
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Folder for the adapter files and the "
                                                                          "federation's state.")] = None,
    base: Base = None,
    overrides: Sets = [],
    resume: Annotated[bool, typer.Option("--resume", help="Continue the federation in --output after its last round.")]
        = False,
    tls_ca: Annotated[Optional[Path], typer.Option("--tls-ca", help="TLS: the CA certificate (PEM) that signed "
                                                                    "--tls-cert; give all three for TLS.")] = None,
    tls_cert: Annotated[Optional[Path], typer.Option("--tls-cert", help="TLS: this server's certificate (PEM).")] = None,
    tls_key: Annotated[Optional[Path], typer.Option("--tls-key", help="TLS: this server's private key (PEM).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Hold the global adapter and aggregate the sites' updates, round by round."""
    from lowbudget.errors import FederationError
    from lowbudget.federation import serve

    given = [tls_ca, tls_cert, tls_key]
    if any(given) and not all(given):
        raise FederationError("TLS needs all three of --tls-ca, --tls-cert and --tls-key")
    certificates = tuple(_read(o, p) for o, p in zip(("--tls-ca", "--tls-cert", "--tls-key"), given)) if all(given) else None

    cfg = _config(rounds, local_steps, min_sites, wait_for, aggregation, server_lr, round_timeout)
    loaded = recipe_from(recipe, overrides, **{"model.base": base, "output.dir": output})
    quiet_libraries()
    result = serve(loaded, cfg, address=address, resume=resume, overwrite=overwrite, certificates=certificates, log=info)
    for path in result.files:
        info(f"wrote {path} ({path.stat().st_size / 1024:.1f} KiB)")


@federate_app.command()
def site(
    recipe: Recipe,
    data: Annotated[str, typer.Option("--data", help="This site's folder of training images (they stay here).")],
    server_address: Annotated[str, typer.Option("--server", help="The server's HOST:PORT.")],
    name: Annotated[str, typer.Option("--name", help="This site's name in the adapter's record (default: none; "
                                                     "the server numbers the sites).")] = "",
    wait: Annotated[float, typer.Option("--wait", help="Seconds to keep trying to reach the server.")] = 300.0,
    tls_ca: Annotated[Optional[Path], typer.Option("--tls-ca", help="TLS: the CA certificate (PEM) that signed the "
                                                                    "server's certificate.")] = None,
    base: Base = None,
    overrides: Sets = [],
    quiet: Quiet = False,
) -> None:
    """Train on this site's images each round and send back only the adapter tensors."""
    from lowbudget.federation import join

    root = _read("--tls-ca", tls_ca)
    loaded = recipe_from(recipe, overrides, **{"model.base": base, "data.path": data})
    quiet_libraries()
    join(loaded, server_address, name=name, wait=wait, root_certificate=root, progress=not quiet, log=info)


@federate_app.command()
def simulate(
    recipe: Recipe,
    sites: Annotated[list[Path], typer.Option("--site", metavar="DIR", help="A site's image folder (repeat per site).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The server's output folder.")] = Path("runs/federated"),
    rounds: Rounds = 10,
    local_steps: LocalSteps = 30,
    min_sites: MinSites = 2,
    aggregation: Aggregation = "fedavg",
    server_lr: ServerLr = 1e-3,
    round_timeout: RoundTimeout = 3600.0,
    seed: Annotated[int, typer.Option("--seed", help="Site i trains with optim.seed = seed + i.")] = 0,
    base: Base = None,
    overrides: Sets = [],
    resume: Annotated[bool, typer.Option("--resume", help="Continue the federation in --output after its last round.")]
        = False,
) -> None:
    """Run a server and a site per --site folder on this machine, over the loopback."""
    from lowbudget.errors import FederationError

    for folder in sites:  # before the imports of a federation's roles, which take seconds
        if not folder.is_dir():
            raise FederationError(f"--site '{folder}' is not a folder; expected a folder of training images")
    from lowbudget.federation import simulate as run_simulation

    cfg = _config(rounds, local_steps, min_sites, max(len(sites), min_sites), aggregation, server_lr, round_timeout)
    recipe_from(recipe, overrides, **{"model.base": base})  # a bad recipe fails here, not in every process
    options = [*(["--base", base] if base else []), *[a for o in overrides for a in ("--set", o)]]
    code = run_simulation(recipe, sites, cfg, output=output, options=options, seed=seed, resume=resume,
                           log=typer.echo)
    if code:
        raise FederationError(f"the server stopped with exit code {code} (its lines above say why)")
