"""The dataset card every ingestion writes: counts that add up to the dataset, the quarantine by reason,
the manifest dataset.json records, the same card again from the folder, `rooivalk dataset card`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from rooivalk import storage
from rooivalk.cli import app
from rooivalk.data import ingest_data
from rooivalk.data.dataset_card import (
    CARD_FILE,
    CARD_MARKDOWN_FILE,
    MAX_REASONS,
    OTHER_REASONS,
    NotADatasetError,
    build_dataset_card,
    manifest_digest,
    summarize_quarantine,
)
from rooivalk.data.dataset_card_schema import CARD_SCHEMA_VERSION, Counts, DatasetCard
from rooivalk.plan import DataSpec
from tests.unit.data.test_detection_ingest_plan import _coco, plan_data
from tests.unit.data.test_ingest import make_folder
from tests.unit.data.test_sequence_dataset import long_frame
from tests.unit.data.test_table_dataset import table

SPLIT = {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 3}
runner = CliRunner()


def _written(dataset_dir: Path) -> DatasetCard:
    return DatasetCard.model_validate_json((dataset_dir / CARD_FILE).read_text())


def _check_counts(counts: Counts, split_sizes: dict[str, int], total: int) -> None:
    """Per class and split counts add up to the split sizes and the total, and per class over splits."""
    assert {split: c.total for split, c in counts.per_split.items()} == split_sizes
    assert counts.total == total
    for split, c in counts.per_split.items():
        assert sum(c.per_class.values()) == split_sizes[split], split
    for name, count in counts.per_class.items():
        assert count == sum(c.per_class[name] for c in counts.per_split.values())


def _check_manifest(card: DatasetCard, dataset_dir: Path) -> None:
    info_bytes = (dataset_dir / "dataset.json").read_bytes()
    info = json.loads(info_bytes)
    assert card.manifest.files == info["files"]
    assert card.manifest.digest == manifest_digest(info["files"])
    assert card.manifest.info_sha256 == storage.sha256_bytes(info_bytes)
    index_bytes = (dataset_dir / card.manifest.index_file).read_bytes()
    assert card.manifest.index_sha256 == storage.sha256_bytes(index_bytes)
    assert set(card.manifest.split_digests) == {"train", "val", "test"}


def _same_but_created(first: DatasetCard, second: DatasetCard) -> None:
    assert first.model_dump(exclude={"created"}) == second.model_dump(exclude={"created"})


def test_a_sequence_dataset_gets_a_card_that_adds_up_and_is_made_again_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROOIVALK_USER", "engineer@example")
    long_frame().to_csv(tmp_path / "seq.csv", index=False)
    spec = DataSpec(source=str(tmp_path / "seq.csv"), format="sequences", split=SPLIT)
    result = ingest_data(spec, str(tmp_path / "ds"))
    card = _written(tmp_path / "ds")
    assert card.schema_version == CARD_SCHEMA_VERSION
    assert (card.dataset_version, card.kind, card.format) == (result.info.version_id, "sequences", "sequences")
    assert card.counts.unit == "sequences"
    _check_counts(card.counts, result.info.split_sizes, result.info.num_sequences)
    _check_manifest(card, tmp_path / "ds")
    assert [(s.uri, s.reader) for s in card.sources.sources] == [(spec.source, "sequences")]
    assert card.created.by == "engineer@example"
    assert card.created.at.endswith("Z")
    assert card.quarantine.count == 0
    monkeypatch.setenv("ROOIVALK_USER", "someone-else")
    again = build_dataset_card(str(tmp_path / "ds"))  # from the folder alone, data_spec.json included
    _same_but_created(card, again)
    assert again.created.by == "someone-else"
    markdown = (tmp_path / "ds" / CARD_MARKDOWN_FILE).read_text()
    assert card.dataset_version in markdown
    assert "| **sequences** |" in markdown


def test_a_table_card_counts_quarantined_rows_by_reason(tmp_path: Path) -> None:
    frame = table().astype({"speed": object})
    frame.loc[[4, 7], "speed"] = "fast"
    frame.loc[9, "label"] = None
    frame.to_csv(tmp_path / "rows.csv", index=False)
    spec = DataSpec(source=str(tmp_path / "rows.csv"), format="table", split=SPLIT)
    result = ingest_data(spec, str(tmp_path / "ds"))
    card = _written(tmp_path / "ds")
    assert card.quarantine.count == 3 == result.info.quarantined
    assert card.quarantine.by_reason == {
        "non-numeric value 'fast' in numeric column 'speed'": 2,
        "missing label": 1,
    }
    assert card.quarantine.file == "quarantine.json"
    _check_counts(card.counts, result.info.split_sizes, result.info.num_rows)
    assert card.counts.total == 21
    _check_manifest(card, tmp_path / "ds")
    _same_but_created(card, build_dataset_card(str(tmp_path / "ds")))


def test_an_image_folder_card(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "raw", {"cat": 8, "dog": 8})
    (folder / "cat" / "empty.png").write_bytes(b"")
    spec = DataSpec(source=str(folder), format="image_folder", split=SPLIT, image_size=8)
    result = ingest_data(spec, str(tmp_path / "ds"))
    card = _written(tmp_path / "ds")
    assert (card.kind, card.format, card.counts.unit) == ("image", "image_folder", "images")
    assert card.classes == ["cat", "dog"]
    _check_counts(card.counts, result.info.split_sizes, result.info.num_samples)
    assert card.counts.per_class == {"cat": 8, "dog": 8}
    assert card.quarantine.by_reason == {"empty file (0 bytes)": 1}
    _check_manifest(card, tmp_path / "ds")
    assert card.manifest.index_file == "samples.csv"
    _same_but_created(card, build_dataset_card(str(tmp_path / "ds")))


def test_a_detection_card_counts_images_and_boxes(tmp_path: Path) -> None:
    path = _coco(tmp_path)
    data = plan_data(path, "coco", split={"train": 0.5, "val": 0.25, "test": 0.25})
    result = ingest_data(data, str(tmp_path / "ds"))
    card = _written(tmp_path / "ds")
    info = result.info
    assert (card.kind, card.format, card.sources.sources[0].reader) == ("detection", "detection", "coco")
    assert card.counts.unit == "images"
    assert {s: c.total for s, c in card.counts.per_split.items()} == info.split_sizes
    assert {s: c.per_class for s, c in card.counts.per_split.items()} == info.image_counts
    assert card.boxes is not None
    _check_counts(card.boxes, {s: sum(c.values()) for s, c in info.box_counts.items()}, info.num_boxes)
    assert card.negatives == info.negatives
    assert card.quarantine.count == info.quarantined == sum(card.quarantine.by_reason.values()) > 0
    _check_manifest(card, tmp_path / "ds")
    assert card.manifest.index_sha256 == info.index_sha256  # images.csv's digest, as dataset.json records it
    _same_but_created(card, build_dataset_card(str(tmp_path / "ds")))


def test_reasons_past_the_limit_are_counted_together() -> None:
    entries: list[dict[str, Any]] = [{"reason": f"bad {i}"} for i in range(MAX_REASONS + 3)] + [{"reason": "x"}] * 2
    summary = summarize_quarantine(entries)
    assert next(iter(summary)) == "x"  # most frequent first
    assert len(summary) == MAX_REASONS + 1
    assert summary[OTHER_REASONS] == 4
    assert sum(summary.values()) == len(entries)


def test_a_folder_that_is_no_dataset_is_named_with_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotADatasetError, match=f"{tmp_path}: .*no dataset.json"):
        build_dataset_card(str(tmp_path))
    result = runner.invoke(app, ["dataset", "card", str(tmp_path)], env={"COLUMNS": "240"})
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert str(tmp_path) in result.output
    assert "dataset.json" in result.output


def test_the_cli_prints_the_card_as_tables_and_json(tmp_path: Path) -> None:
    long_frame().to_csv(tmp_path / "seq.csv", index=False)
    ingest_data(DataSpec(source=str(tmp_path / "seq.csv"), format="sequences", split=SPLIT), str(tmp_path / "ds"))
    card = _written(tmp_path / "ds")
    as_json = runner.invoke(app, ["dataset", "card", str(tmp_path / "ds"), "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert DatasetCard.model_validate_json(as_json.output) == card
    shown = runner.invoke(app, ["dataset", "card", str(tmp_path / "ds")], env={"COLUMNS": "240"})
    assert shown.exit_code == 0, shown.output
    assert card.dataset_version in shown.output
    assert "sequences per class and split" in shown.output
    (tmp_path / "ds" / CARD_FILE).unlink()  # a dataset older than cards: built, not written
    rebuilt = runner.invoke(app, ["dataset", "card", str(tmp_path / "ds"), "--json"])
    assert rebuilt.exit_code == 0, rebuilt.output
    _same_but_created(card, DatasetCard.model_validate_json(rebuilt.output))
    assert not (tmp_path / "ds" / CARD_FILE).exists()


def test_the_creator_is_rooivalk_user_else_the_os_user_else_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    from rooivalk.data.dataset_card import card_creator

    monkeypatch.setenv("ROOIVALK_USER", "a.engineer")
    assert card_creator() == "a.engineer"
    monkeypatch.delenv("ROOIVALK_USER")
    monkeypatch.setattr(getpass, "getuser", lambda: "os-user")
    assert card_creator() == "os-user"

    def no_user() -> str:
        raise OSError("No username set in the environment")  # a container without a passwd entry

    monkeypatch.setattr(getpass, "getuser", no_user)
    assert card_creator() == "unknown"
