"""The training report's requirement and gate tables: what the run was checked against, and the verdicts."""

from __future__ import annotations

from rooivalk.cli.report_data import RunFolder
from rooivalk.cli.report_parts import Section, Table, cell


def requirements_section(folder: RunFolder) -> Section:
    """Each requirement's figure and verdict: the evaluation's, and for a figure the evaluation does not
    produce (an export latency) the export step's, as the registered version's record measures them."""
    from rooivalk.plan import RequirementSpec
    from rooivalk.plan.requirements import measure_requirements

    recorded = (folder.evaluation or {}).get("requirements")
    if not recorded:
        return Section("Requirements", ["No requirements in the plan."])
    fields = ("id", "text", "metric", "min", "max", "class_name")
    requirements = [RequirementSpec.model_validate({k: r.get(k) for k in fields}) for r in recorded]
    figures = {
        key: value
        for name, step in folder.steps.items()
        if name.startswith("export")
        for key, value in (step.get("metrics") or {}).items()
    }
    figures |= {
        req.key: r["value"] for req, r in zip(requirements, recorded, strict=True) if r.get("value") is not None
    }
    verdicts = {True: "pass", False: "FAIL", None: "not measured"}
    return Section(
        "Requirements",
        [
            Table(
                ["id", "requirement", "figure", "min", "max", "value", "result"],
                [
                    [
                        str(r["id"]),
                        str(r["text"]),
                        req.key + (f" ({r['split']} split)" if r["split"] else ""),
                        cell(r["min"], ".4g"),
                        cell(r["max"], ".4g"),
                        cell(r["value"], ".4f"),
                        verdicts[r["passed"]],
                    ]
                    for req, r in zip(requirements, measure_requirements(requirements, figures), strict=True)
                ],
            )
        ],
    )


def gates_section(folder: RunFolder) -> Section:
    rows = [
        [
            name,
            str(g.get("metric")),
            cell(g.get("min"), ".4g"),
            cell(g.get("max"), ".4g"),
            cell(g.get("value"), ".4f"),
            "pass" if g.get("passed") else "FAIL",
        ]
        for name, step in folder.steps.items()
        for g in step.get("gates") or []
    ]
    if not rows:
        return Section("Gates", ["The run recorded no gates."])
    return Section("Gates", [Table(["step", "metric", "min", "max", "value", "result"], rows)])
