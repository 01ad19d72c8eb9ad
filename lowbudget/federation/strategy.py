"""Flower's FedAvg and FedAdam, with what a federation of hospitals needs on top.

Every update is checked before it is aggregated (:func:`~lowbudget.federation.tensors.update_problem`,
the base fingerprint, an image count); a rejected one is logged with the site and the reason
and left out. A round with fewer usable updates than ``min_sites`` keeps the global tensors.
Rounds are numbered over the whole federation, so a resumed server goes on at round r + 1
(FedAdam's bias correction counts from there too). After each aggregation ``on_round`` gets
the new tensors, for the server's checkpoint.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from flwr.common import FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAdam, FedAvg

from lowbudget.federation.config import FederationConfig
from lowbudget.federation.tensors import Layout, layout_json, update_problem
from lowbudget.progress import plural


class Ledger:
    """The sites heard from: a label each (the name a site gave, else ``site N``, N counting the
    unnamed sites in the order they first answered; no address or path is kept), its image count
    and the rounds it counted in."""

    def __init__(self, sites: list[dict[str, Any]] | None = None) -> None:
        self.sites: list[dict[str, Any]] = [dict(s) for s in sites or []]
        self._by_cid: dict[str, dict[str, Any]] = {}

    def site(self, cid: str, name: str = "") -> dict[str, Any]:
        if cid not in self._by_cid:
            known = [s for s in self.sites if name and s["site"] == name]  # a named site that came back
            unnamed = sum(1 for s in self.sites if not s.get("named"))
            entry = known[0] if known else {"site": name or f"site {unnamed + 1}", "named": bool(name), "images": 0,
                                            "rounds": 0}
            if not known:
                self.sites.append(entry)
            self._by_cid[cid] = entry
        return self._by_cid[cid]

    def label(self, cid: str) -> str:
        return self._by_cid[cid]["site"] if cid in self._by_cid else "a site not heard from before"


def make_strategy(cfg: FederationConfig, *, layout: Layout, start: list[np.ndarray], fingerprint: str, ledger: Ledger,
                  first_round: int, moments: tuple[list[np.ndarray], list[np.ndarray]] | None,
                  on_round: Callable[[int, list[np.ndarray], Any], None], log: Callable[[str], None]) -> Any:
    """A checked FedAvg or FedAdam (``cfg.aggregation``) starting from ``start`` at ``first_round``."""
    flower = FedAdam if cfg.aggregation == "fedadam" else FedAvg
    checked = type(f"Checked{flower.__name__}", (_Checked, flower), {})
    # FedAdam: eta is the server's step, tau Adam's epsilon (the tensors' scale is ~1e-2, not 1);
    # eta_l is a site-side rate FedOpt stores and FedAdam's aggregation never reads.
    extra = {"eta": cfg.server_lr, "eta_l": 1.0, "tau": 1e-6} if cfg.aggregation == "fedadam" else {}

    def fit_config(server_round: int) -> dict[str, Scalar]:
        return {"round": first_round + server_round - 1, "rounds": cfg.rounds, "local_steps": cfg.local_steps,
                "layout": layout_json(layout), "fingerprint": fingerprint}

    strategy = checked(
        fraction_fit=1.0, min_fit_clients=cfg.min_sites, min_available_clients=cfg.min_sites,
        fraction_evaluate=0.0, min_evaluate_clients=0, accept_failures=True, on_fit_config_fn=fit_config,
        fit_metrics_aggregation_fn=lambda metrics: {},  # the round's line reports the losses
        initial_parameters=ndarrays_to_parameters(start), **extra,
    )
    strategy.set_up(cfg=cfg, layout=layout, fingerprint=fingerprint, ledger=ledger, first_round=first_round,
                    on_round=on_round, log=log)
    if moments is not None and cfg.aggregation == "fedadam":
        strategy.m_t, strategy.v_t = moments
    return strategy


class _Checked:
    """Placed before FedAvg / FedAdam in the class's bases: checks and bookkeeping around their aggregation."""

    def set_up(self, *, cfg: FederationConfig, layout: Layout, fingerprint: str, ledger: Ledger, first_round: int,
               on_round: Callable[[int, list[np.ndarray], Any], None], log: Callable[[str], None]) -> None:
        self.cfg, self.layout, self.fingerprint, self.ledger = cfg, layout, fingerprint, ledger
        self.first_round, self.on_round, self.log = first_round, on_round, log

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> list:
        r = self.first_round + server_round - 1
        wanted = max(self.cfg.wait_for, self.cfg.min_sites) if server_round == 1 else self.cfg.min_sites
        self.log(f"round {r} of {self.cfg.rounds}: waiting for {plural(wanted, 'site')} "
                 f"({client_manager.num_available()} connected)")
        client_manager.wait_for(wanted, timeout=int(self.cfg.round_timeout))  # then every connected site takes part
        self.current = parameters  # the global tensors, kept by a round that aggregates nothing
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list) -> tuple[Parameters | None, dict[str, Scalar]]:
        r = self.first_round + server_round - 1
        for failure in failures:
            if isinstance(failure, tuple):
                self.log(f"round {r}: {self.ledger.label(failure[0].cid)} failed: {failure[1].status.message}")
            else:
                self.log(f"round {r}: a site dropped out ({type(failure).__name__}{': ' + str(failure) if str(failure) else ''})")
        kept = []
        for proxy, res in results:
            entry = self.ledger.site(proxy.cid, str(res.metrics.get("site", "")))
            problem = self._problem(res)
            if problem:
                self.log(f"round {r}: rejected the update of {entry['site']}: {problem}")
                continue
            entry["images"], entry["rounds"] = int(res.num_examples), entry["rounds"] + 1
            kept.append((proxy, res))
        if len(kept) < self.cfg.min_sites:
            self.log(f"round {r}: {plural(len(kept), 'usable update')}, fewer than --min-sites {self.cfg.min_sites}; "
                     "the global adapter stays as it was")
            self.on_round(r, parameters_to_ndarrays(self.current), self)  # the round is done, all the same
            return None, {}
        parameters, metrics = super().aggregate_fit(r, kept, [])  # FedAdam's bias correction: the federation's round
        losses = [float(res.metrics.get("loss", float("nan"))) for _, res in kept]
        self.log(f"round {r} of {self.cfg.rounds}: aggregated {plural(len(kept), 'site')} "
                 f"({', '.join(self.ledger.label(p.cid) for p, _ in kept)}), mean local loss {np.mean(losses):.4f}")
        self.on_round(r, parameters_to_ndarrays(parameters), self)
        return parameters, metrics

    def _problem(self, res: FitRes) -> str:
        if res.metrics.get("fingerprint") != self.fingerprint:
            return (f"it trained on another base (vocabulary fingerprint {res.metrics.get('fingerprint')!s:.12}, "
                    f"the server's {self.fingerprint:.12})")
        if res.num_examples < 1:
            return f"it reports {res.num_examples} images"
        return update_problem(parameters_to_ndarrays(res.parameters), self.layout)
