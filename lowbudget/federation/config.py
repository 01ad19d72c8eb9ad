"""The federation's settings: the server decides them, and tells every site each round."""

from __future__ import annotations

from dataclasses import dataclass, field

from lowbudget import checks
from lowbudget.errors import FederationError

AGGREGATIONS = ("fedavg", "fedadam")


@dataclass
class FederationConfig:
    rounds: int = field(default=10, metadata={"help": "Rounds: each site trains local_steps from the global tensors, "
                                                      "the server aggregates."})
    local_steps: int = field(default=30, metadata={"help": "Training steps each site runs per round."})
    min_sites: int = field(default=2, metadata={"help": "Sites a round needs: it waits for this many, and keeps the "
                                                        "global tensors when fewer usable updates come back."})
    wait_for: int = field(default=0, metadata={"help": "Sites the first round waits for (0: min_sites); later rounds "
                                                       "go with whoever is connected, at least min_sites."})
    aggregation: str = field(default="fedavg", metadata={"help": "fedavg: mean of the sites' tensors weighted by "
                                                                 "their image counts. fedadam: Adam on the server, "
                                                                 "over the mean update (Reddi et al. 2021)."})
    server_lr: float = field(default=1e-3, metadata={"help": "fedadam: the server's step size (Flower's eta)."})
    round_timeout: float = field(default=3600.0, metadata={"help": "Seconds a round waits for updates; a site that "
                                                                   "has not answered by then counts as dropped."})

    def __post_init__(self) -> None:
        for name in ("rounds", "local_steps", "min_sites"):
            checks.at_least(f"--{name.replace('_', '-')}", getattr(self, name), 1, FederationError)
        if self.wait_for and self.wait_for < self.min_sites:
            raise FederationError(f"--wait-for {self.wait_for} is below --min-sites {self.min_sites}")
        if self.aggregation not in AGGREGATIONS:
            raise FederationError(f"--aggregation {self.aggregation!r} is not known; expected one of {', '.join(AGGREGATIONS)}")
        checks.within("--server-lr", self.server_lr, 1e-9, 10.0, FederationError)
        checks.at_least("--round-timeout", self.round_timeout, 1.0, FederationError)
