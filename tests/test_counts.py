"""Generation counts for the `imbalance` and `addition` recipes (paper Table I)."""

import numpy as np
import pytest

from nvae_ecg.classes import CLASS_ABBREVS, class_index, resolve_classes
from nvae_ecg.counts import addition_plan, class_counts, generation_plan, imbalance_plan, plan_summary, plan_to_labels


def _matrix(rows):
    y = np.zeros((len(rows), 9), dtype=np.uint8)
    for r, names in enumerate(rows):
        for n in names:
            y[r, class_index(n)] = 1
    return y


def test_table1_lad_example():
    # SR 15,263 and LAD 4,061 -> 11,202 LAD ECGs at factor 1 (paper Table I).
    y = np.zeros((15263 + 4061, 9), dtype=np.uint8)
    y[:15263, class_index("SR")] = 1
    y[15263:, class_index("LAD")] = 1
    plan = imbalance_plan(y)
    assert plan_summary(plan, CLASS_ABBREVS)["LAD"] == 11202
    # absent classes are filled to the reference too
    assert plan_summary(plan, CLASS_ABBREVS)["MI"] == 15263


def test_imbalance_hand_made():
    y = _matrix([["SR"]] * 5 + [["SR", "MI"]] * 2 + [["AF"]] * 1 + [["LVH", "TAb"]] * 3)
    np.testing.assert_array_equal(class_counts(y), [7, 2, 0, 3, 1, 0, 0, 0, 3])
    plan = imbalance_plan(y)
    got = plan_summary(plan, CLASS_ABBREVS)
    assert got == {"MI": 5, "LAD": 7, "LVH": 4, "AF": 6, "STach": 7, "IAVB": 7, "SB": 7, "TAb": 4}
    assert all(sum(item.labels) == 1 for item in plan)  # single-label ECGs
    # factor scales and rounds; a class above the reference is not filled
    assert plan_summary(imbalance_plan(y, factor=0.5), CLASS_ABBREVS)["MI"] == round(2.5)
    mi_only = imbalance_plan(y, targets=[class_index("MI")], reference=class_index("SR"))
    assert plan_summary(mi_only, CLASS_ABBREVS) == {"MI": 5}


def test_addition_hand_made():
    y = _matrix([["SR"]] * 5 + [["SR", "MI"]] * 2 + [["AF"]] * 1 + [[]] * 4)
    plan = addition_plan(y, factor=2)
    assert plan_summary(plan, CLASS_ABBREVS) == {"SR": 10, "SR+MI": 4, "AF": 2}
    labels = plan_to_labels(plan, 9)
    assert labels.shape == (16, 9)
    assert labels[:, class_index("SR")].sum() == 14
    # round half to even: 2.5 -> 2; AF rounds to 0 and is left out
    assert plan_summary(generation_plan(y, "addition", 0.5), CLASS_ABBREVS) == {"SR": 2, "SR+MI": 1}


def test_bad_inputs():
    with pytest.raises(ValueError, match="task_type"):
        generation_plan(np.zeros((2, 9)), "more")
    with pytest.raises(ValueError, match="0 and 1"):
        class_counts(np.full((2, 9), 2))
    with pytest.raises(ValueError, match="unknown class"):
        resolve_classes("SR,XYZ")
    assert resolve_classes("mi,164889003") == [1, 4]
