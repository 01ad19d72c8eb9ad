"""Run by tests/test_federation.py: ``lowbudget federate site`` with a fault, as a broken or
hostile site would behave. ``nan``: the round-1 update carries a NaN. ``die``: the process
kills itself in round 2 after training, before answering (a crash mid-round)."""

import os
import signal
import sys

import numpy as np

from lowbudget.cli import main
from lowbudget.federation import site

mode, args = sys.argv[1], sys.argv[2:]
honest_fit = site.Site.fit


def fit(self, parameters, config):
    arrays, images, metrics = honest_fit(self, parameters, config)
    if mode == "nan" and int(config["round"]) == 1:
        arrays[0][0, 0] = np.nan
    if mode == "die" and int(config["round"]) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return arrays, images, metrics


site.Site.fit = fit
sys.argv = ["lowbudget", "federate", *args]
main()
