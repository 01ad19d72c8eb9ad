"""Scheduler choice by name, configured from the base model's own scheduler config."""

from __future__ import annotations

import diffusers

from lowbudget.errors import LowbudgetError

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "pndm": "PNDMScheduler",
}


def make_scheduler(name: str, config: dict):
    if name not in SCHEDULERS:
        raise LowbudgetError(f"--scheduler {name!r} is not known; expected one of {', '.join(SCHEDULERS)}")
    cls = getattr(diffusers, SCHEDULERS[name])
    return cls.from_config({k: v for k, v in dict(config).items() if not k.startswith("_")})
