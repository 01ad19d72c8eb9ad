"""How a finding appears: the per-side readers, leakage and the second-real-set floor."""

from __future__ import annotations

import numpy as np
import pytest

from lowbudget.phantoms import attributes, chest
from lowbudget.phantoms.world import generate
from lowbudget.stats import total_variation

SIDED = [("chest", "effusion"), ("chest", "pneumothorax"), ("chest", "nodule"), ("prostate", "lesion")]


@pytest.mark.parametrize("modality,finding", SIDED)
def test_the_side_readers_read_the_side_the_generator_drew(modality, finding):
    phantoms = generate(modality, finding, n=60, seed=91) + generate(modality, "none", n=30, seed=92)
    read = attributes.sides(modality, finding, [p.image for p in phantoms])
    truth = [attributes.true_side(finding, p) for p in phantoms]
    assert {"right", "left"} <= set(truth)  # both sides are in the test set
    assert np.mean([r == t for r, t in zip(read, truth)]) >= 0.97


def _both_sides(seed: int) -> np.ndarray:
    """An effusion on both sides: the same patient drawn twice, each half from one drawing."""
    labels = chest.sample_chest_labels(np.random.default_rng(seed), {"effusion"})
    halves = []
    for side in ("right", "left"):
        labels.effusion = side
        halves.append(chest.render_chest(labels, 64, np.random.default_rng(seed))[0])
    return np.concatenate([halves[0][:, :32], halves[1][:, 32:]], axis=1)  # image left = patient right


def test_an_effusion_on_both_sides_reads_both():
    assert attributes.sides("chest", "effusion", [_both_sides(s) for s in range(8)]) == ["both"] * 8


def test_total_variation_of_named_distributions():
    assert total_variation({"a": 1.0}, {"b": 1.0}) == 1.0
    assert total_variation({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}) == 0.0
    assert total_variation({"right": 0.5, "left": 0.5, "both": 0.0}, {"right": 0.25, "left": 0.25, "both": 0.5}) == 0.5


def test_side_distribution_counts_only_images_with_a_side():
    assert attributes.side_distribution(["right", "left", "both", None]) == pytest.approx(
        {"right": 1 / 3, "left": 1 / 3, "both": 1 / 3})
    assert attributes.side_distribution([None, None]) == {"right": 0.0, "left": 0.0, "both": 0.0}


def test_a_second_real_set_is_within_the_floor_and_a_drifted_set_is_not():
    training = [p.image for p in generate("chest", "effusion", n=100, seed=0)]
    real = np.stack([p.image for p in generate("chest", "effusion", n=24, seed=123)])
    faithful = attributes.compare("chest", "effusion", real, training, floor_sets=10)
    assert faithful["side_tv"] <= faithful["side_tv_floor"]["p95"] + 0.05
    assert faithful["leakage"] <= 0.05 and faithful["excluded"] == []

    # Half the images on both sides, and an enlarged heart in a third of them (the leaked finding).
    drifted = np.stack([_both_sides(s) for s in range(12)]
                       + [p.image for p in generate("chest", "effusion", n=12, seed=124)])
    enlarged = np.stack([p.image for p in generate("chest", "cardiomegaly", n=8, seed=125)])
    drifted[:8] = np.maximum(drifted[:8], enlarged)  # the heart shadow of one, the lungs of the other
    attr = attributes.compare("chest", "effusion", drifted, training, floor_sets=10)
    assert attr["sides_generated"]["both"] >= 0.4
    assert attr["side_tv"] > attr["side_tv_floor"]["p95"]
    assert attr["others_generated"]["cardiomegaly"] >= 0.25
    assert attr["leakage"] > attr["leakage_floor"]["p95"]


def test_findings_the_training_set_has_are_not_leakage():
    training = [p.image for p in generate("chest", "effusion", n=60, seed=0, prevalence=0.5)]  # others at 50%
    images = np.stack([p.image for p in generate("chest", "effusion", n=16, seed=7, prevalence=0.5)])
    attr = attributes.compare("chest", "effusion", images, training, floor_sets=4)
    assert set(attr["excluded"]) == {"pneumothorax", "cardiomegaly", "nodule"}
    assert attr["leakage"] == 0.0 and attr["others_generated"]["cardiomegaly"] > 0
