"""Federated training: sites train one adapter together, and no image leaves a site.

Built on Flower (``flwr``, the ``federate`` extra) and its gRPC server and client: a server
(:func:`serve`) holds the global adapter tensors and aggregates the sites' updates each round
(FedAvg weighted by image count, or FedAdam); each site (:func:`join`) starts a round from the
global tensors, trains a few local steps through lowbudget's one training loop on its own
images, and returns only the adapter tensors and its image count. :func:`simulate` runs every
role on one machine. The result is an ordinary adapter file whose header records the federation.

    tensors.py   the adapter tensors as Flower's arrays, and the checks every update must pass
    strategy.py  FedAvg / FedAdam with those checks, site names, --min-sites, a checkpoint per round
    server.py    the server: base, starting tensors, rounds, the adapter file at the end
    site.py      a site: its data and base set up once, then local steps per round
    simulate.py  a server and its sites as processes of one machine, on the loopback
"""

from __future__ import annotations

import logging
import os

from lowbudget.errors import LowbudgetError

# Flower reports usage to its makers' server unless told not to; a hospital's federation tells
# no one. Set before flwr is first imported (it reads the variable at import).
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


def _flower_says(record: logging.LogRecord) -> bool:
    """Flower's own lines worth a user's eye: its warnings and errors, less the notice that the
    gRPC server and client lowbudget starts are deprecated in favour of Flower's SuperLink and
    SuperNode daemons (which would make each site install lowbudget as a packaged Flower app),
    and less its traceback of lowbudget's own errors, which the CLI reports in one line."""
    ours = record.exc_info is not None and isinstance(record.exc_info[1], LowbudgetError)
    return record.levelno >= logging.WARNING and "DEPRECATED FEATURE" not in record.getMessage() and not ours


logging.getLogger("flwr").addFilter(_flower_says)  # lowbudget's own lines say what each round did

from lowbudget.federation.config import FederationConfig  # noqa: E402
from lowbudget.federation.server import serve  # noqa: E402
from lowbudget.federation.simulate import simulate  # noqa: E402
from lowbudget.federation.site import join  # noqa: E402

__all__ = ["FederationConfig", "join", "serve", "simulate"]
