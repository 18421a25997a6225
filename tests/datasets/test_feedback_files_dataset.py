"""FeedbackFilesDataset reads moderators' files from an s3:// prefix."""

from __future__ import annotations

from eyecatcher import storage
from eyecatcher.datasets.feedback_files_dataset import FeedbackFilesDataset


def test_feedback_files_from_s3(s3_bucket: str) -> None:
    prefix = f"{s3_bucket}/01_raw/feedback"
    storage.write_atomic(f"{prefix}/2026-12/verdicts.csv", b"sha256,verdict\n")
    storage.write_atomic(f"{prefix}/README.md", b"not feedback")
    files = FeedbackFilesDataset(path=prefix).load()
    assert sorted(files) == ["2026-12/verdicts.csv"]
    assert files["2026-12/verdicts.csv"].size == len(b"sha256,verdict\n")
    assert files["2026-12/verdicts.csv"].read(1000) == b"sha256,verdict\n"
    assert FeedbackFilesDataset(path=f"{s3_bucket}/nowhere").load() == {}
