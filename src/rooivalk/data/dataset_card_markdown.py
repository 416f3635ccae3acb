"""dataset_card.md: the dataset card (rooivalk.data.dataset_card) as Markdown for people; the JSON is the
record that tools read, this page says the same and nothing more."""

from __future__ import annotations

import json

from rooivalk.data.dataset_card_schema import Counts, DatasetCard


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def counts_rows(counts: Counts) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per class with its count per split and in all, then the totals row, named
    by the unit (images, rows, ...)."""
    splits = list(counts.per_split)
    header = ["class", *splits, "all"]
    rows = [
        [name, *(str(counts.per_split[s].per_class[name]) for s in splits), str(total)]
        for name, total in counts.per_class.items()
    ]
    rows.append([counts.unit, *(str(counts.per_split[s].total) for s in splits), str(counts.total)])
    return header, rows


def _counts_table(counts: Counts) -> list[str]:
    header, rows = counts_rows(counts)
    rows[-1] = [f"**{cell}**" for cell in rows[-1]]
    return _table(header, [[_escape(row[0]), *row[1:]] for row in rows])


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_card_markdown(card: DatasetCard) -> str:
    sources = card.sources.sources
    lines = [
        f"# Dataset card {card.dataset_version}",
        "",
        f"- kind: {card.kind} (format {card.format}), {len(card.classes)} classes, split seed {card.split_seed}",
        f"- created by {card.created.by} at {card.created.at} with rooivalk {card.created.rooivalk_version} "
        f"(git commit {card.created.git_commit})",
        f"- card schema version {card.schema_version}; the record is dataset_card.json",
        "",
        "## Sources",
        "",
        *_table(["name", "URI", "reader"], [[_escape(s.name), _escape(s.uri), s.reader or "?"] for s in sources]),
    ]
    if card.sources.simulated is not None:
        lines += ["", f"Simulated: `{json.dumps(card.sources.simulated, sort_keys=True)}`"]
    if card.sources.class_map:
        lines += ["", f"Class map: `{json.dumps(card.sources.class_map, sort_keys=True)}`"]
    if card.sources.images_per_source:
        lines += ["", "Images per source: " + ", ".join(f"{k} {v}" for k, v in card.sources.images_per_source.items())]
    lines += ["", f"## {card.counts.unit.capitalize()} per class and split", "", *_counts_table(card.counts)]
    if card.kind == "detection":
        lines += ["", "(an image holding boxes of several classes counts under each)"]
    if card.boxes is not None:
        lines += ["", "## Boxes per class and split", "", *_counts_table(card.boxes)]
    if card.negatives is not None:
        lines += ["", "Images without a box: " + ", ".join(f"{k} {v}" for k, v in card.negatives.items())]
    if card.missing_modalities is not None:
        splits = list(card.counts.per_split)
        rows = [[sensor, *(str(per[s]) for s in splits)] for sensor, per in card.missing_modalities.items()]
        lines += ["", "## Events without a sensor's sample", "", *_table(["sensor", *splits], rows)]
    quarantine = card.quarantine
    lines += ["", "## Quarantine", "", f"{quarantine.count} quarantined, listed in `{quarantine.file}`."]
    if quarantine.by_reason:
        reasons = [[_escape(reason), str(count)] for reason, count in quarantine.by_reason.items()]
        lines += ["", *_table(["reason", "count"], reasons)]
    manifest = card.manifest
    lines += [
        "",
        "## Manifest (sha256)",
        "",
        f"- {manifest.info_file}: `{manifest.info_sha256}`",
        f"- manifest of the array files (`sha256sum` lines): `{manifest.digest}`",
        *(f"  - {name}: `{digest}`" for name, digest in manifest.files.items()),
        f"- per-item index {manifest.index_file}: `{manifest.index_sha256}`",
        *(f"  - its {split} rows: `{digest}`" for split, digest in manifest.split_digests.items()),
        "",
    ]
    return "\n".join(lines)
