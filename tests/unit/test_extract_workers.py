"""`jpipe extract FILE --workers 2` writes the very bytes of `--workers 1` (tiny extractor of ``test_extractor``)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sudachipy")

from typer.testing import CliRunner  # noqa: E402

from pipeline.cli import app  # noqa: E402
from tests.conftest import run_stage  # noqa: E402
from tests.unit.test_extractor import FAST, write_extractor_project  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def extractor_project(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)
    project = write_extractor_project(tmp_path_factory.mktemp("exw") / "proj")
    run_stage(project, "train_extractor", [*FAST, "train_extractor.epochs=3", "train_extractor.patience=3"])
    return project


def test_two_workers_write_the_rows_of_one_in_input_order(extractor_project, tmp_path):
    texts = ["ラーメンが美味しい。", "店が狭い。", "", "寺に行く。", "画面が綺麗だ。", "   ", "料金が高い。"]
    source = tmp_path / "reviews.txt"
    source.write_text("\n".join(texts[i % len(texts)] for i in range(100)) + "\n", encoding="utf-8")  # 4 chunks of 32 rows
    outputs = {}
    for workers in (1, 2):
        target = tmp_path / f"out{workers}.jsonl"
        result = runner.invoke(app, ["--dir", str(extractor_project), "extract", str(source), "--workers", str(workers), "-o", str(target)])
        assert result.exit_code == 0, result.output
        outputs[workers] = (target.read_bytes(), result.stderr)
    assert outputs[2] == outputs[1]
    lines = outputs[1][0].decode().splitlines()
    assert len(lines) == 100 and lines[0].startswith('{"id": "1", "text": "ラーメンが美味しい。"') and '"id": "100"' in lines[-1]
    assert "extracted from 72 of 100 rows; 28 with errors" in outputs[1][1]
