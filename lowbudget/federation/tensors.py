"""The adapter tensors on the wire, and what an update must be before it is aggregated.

Flower moves lists of numpy arrays (serialised with ``np.save(allow_pickle=False)``: no code
can ride along). A federation's tensors are listed by name in one fixed order, its *layout*,
which the server sends with every round; a site whose recipe makes other tensors cannot join.
"""

from __future__ import annotations

import json

import numpy as np
import torch

Layout = list[tuple[str, tuple[int, ...]]]  # (tensor name, shape), in the order of the arrays on the wire
DTYPE = np.float32  # adapter tensors train in fp32 whatever the base's precision


def layout_of(tensors: dict[str, torch.Tensor]) -> Layout:
    return [(name, tuple(tensors[name].shape)) for name in sorted(tensors)]


def layout_json(layout: Layout) -> str:
    return json.dumps([[name, list(shape)] for name, shape in layout])


def layout_from_json(text: str) -> Layout:
    return [(name, tuple(shape)) for name, shape in json.loads(text)]


def to_arrays(tensors: dict[str, torch.Tensor], layout: Layout) -> list[np.ndarray]:
    return [tensors[name].detach().to("cpu", torch.float32).numpy().copy() for name, _ in layout]


def load_into(live: dict[str, torch.Tensor], arrays: list[np.ndarray], layout: Layout) -> None:
    """Copy the global tensors into live (trainable) ones: a site's, or the server's for the file."""
    with torch.no_grad():
        for (name, _), a in zip(layout, arrays, strict=True):
            live[name].copy_(torch.from_numpy(np.array(a, dtype=DTYPE)).to(live[name].device, live[name].dtype))


def update_problem(arrays: list[np.ndarray], layout: Layout) -> str:
    """Why an update cannot be aggregated ("" when it can): the count, shape, dtype and
    finiteness of every array against the federation's layout."""
    if len(arrays) != len(layout):
        return f"{len(arrays)} tensors, expected {len(layout)}"
    for (name, shape), a in zip(layout, arrays):
        if tuple(a.shape) != shape:
            return f"tensor '{name}' has shape {tuple(a.shape)}, expected {shape}"
        if a.dtype != DTYPE:
            return f"tensor '{name}' is {a.dtype}, expected float32"
        bad = int(a.size - np.isfinite(a).sum())
        if bad:
            return f"tensor '{name}' has {bad} non-finite values (NaN or inf)"
    return ""
