"""Per-class figures the requirements ask for, and each requirement's verdict (rooivalk.evaluation.requirements)."""

from __future__ import annotations

import pytest

from rooivalk.evaluation.requirements import measure_requirements, per_class_figures
from rooivalk.plan import RequirementSpec

FUSION_RECALL = RequirementSpec(
    id="CD-1", text="military drones found", metric="fusion_test_recall", class_name="military_drone", min=0.85
)
MODEL_F1 = RequirementSpec(id="M-1", text="f1", metric="test_f1", class_name="bird", min=0.5)
LATENCY = RequirementSpec(id="L-1", text="fast", metric="end_to_end_latency_p95_ms", max=200)


def test_a_fusion_requirement_reads_the_fusion_table_and_a_model_one_the_models() -> None:
    fusion = {"military_drone": {"recall": 0.87, "precision": 0.9}, "bird": {"recall": 0.98}}
    requirements = [FUSION_RECALL, MODEL_F1, LATENCY]
    figures = per_class_figures(requirements, fusion, "fusion_test_", "the fusion")
    assert figures == {"fusion_test_recall.military_drone": 0.87}  # test_f1 is not the fusion's figure
    verdicts = measure_requirements(requirements, {**figures, "end_to_end_latency_p95_ms": 250.0})
    assert [(v["id"], v["value"], v["passed"], v["split"]) for v in verdicts] == [
        ("CD-1", 0.87, True, "test"),
        ("M-1", None, None, "test"),
        ("L-1", 250.0, False, None),
    ]
    with pytest.raises(
        ValueError, match=r"requirements\[0\]\.class_name: 'military_drone' is not a class of the fusion"
    ):
        per_class_figures(requirements, {"bird": {"recall": 1.0}}, "fusion_test_", "the fusion")
