"""Types shared by the sequence readers (rooivalk.data.sequence_reader, rooivalk.data.sequence_npz)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rooivalk.data.source_tables import QuarantinedItem, SourceFormatError


class SequenceFormatError(SourceFormatError):
    """A sequence source that cannot be read as a whole; the message names the file and column.

    `quarantined`: the entries collected before the failure, so that a caller can still report them.
    """


@dataclass
class FileSequences:
    """The valid sequences of one file, in the file's own feature order."""

    uri: str
    features: list[str]
    has_splits: bool
    sequences: list[np.ndarray] = field(default_factory=list)  # float32 (T_i, F)
    labels: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)  # "" when the file has no split column
    quarantined: list[QuarantinedItem] = field(default_factory=list)

    def add(self, frames: np.ndarray, label: str, sequence_id: str, split: str) -> None:
        self.sequences.append(frames)
        self.labels.append(label)
        self.ids.append(sequence_id)
        self.splits.append(split)
