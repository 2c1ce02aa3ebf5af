"""DirectoryDecisions on a real filesystem: kubelet ..data swaps, local-mode layout, bad files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from sluice.decision import to_json
from sluice.sources.directory import DirectoryDecisions
from tests.support.sdk_helpers import kubelet_write, make_circuit, make_decision


def test_reads_a_kubelet_volume_and_follows_the_atomic_data_swap(tmp_path: Path) -> None:
    first = make_decision(epoch=1)
    kubelet_write(tmp_path, {"decision.json": to_json(first)})
    assert os.readlink(tmp_path / "decision.json") == "..data/decision.json"
    source = DirectoryDecisions(tmp_path, start=False)
    view = source.view()
    assert view.decision is not None and view.decision.doc == first and view.errors == 0

    second = make_decision(epoch=2, delay_ms=100)
    old_target = os.readlink(tmp_path / "..data")
    kubelet_write(tmp_path, {"decision.json": to_json(second), "circuit.json": to_json(make_circuit("kafka", "open"))})
    assert not (tmp_path / old_target).exists()  # the old timestamped directory is gone
    source.poll_once()
    view = source.view()
    assert view.decision is not None and view.decision.doc.epoch == 2
    assert [c.doc.state for c in view.circuits] == ["open"]

    kubelet_write(tmp_path, {"decision.json": to_json(second)})  # circuit key removed from the ConfigMap
    source.poll_once()
    assert source.view().circuits == ()


def test_the_polling_thread_picks_up_a_swap(tmp_path: Path) -> None:
    kubelet_write(tmp_path, {"decision.json": to_json(make_decision(epoch=1))})
    with DirectoryDecisions(tmp_path, poll_interval=0.02) as source:
        kubelet_write(tmp_path, {"decision.json": to_json(make_decision(epoch=5))})
        assert source.wait_for(lambda v: v.decision is not None and v.decision.doc.epoch == 5, timeout=5)


def test_unchanged_polls_do_not_bump_the_version(tmp_path: Path) -> None:
    kubelet_write(tmp_path, {"decision.json": to_json(make_decision())})
    source = DirectoryDecisions(tmp_path, start=False)
    version = source.version
    received = source.view().decision.received_at  # type: ignore[union-attr]
    for _ in range(3):
        source.poll_once()
    assert source.version == version
    assert source.view().decision.received_at == received  # type: ignore[union-attr]


def test_a_partially_written_file_keeps_the_last_good_document_logged_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = make_decision(epoch=3)
    target = tmp_path / "decision.json"
    target.write_text(to_json(good))  # local mode's plain file
    source = DirectoryDecisions(tmp_path, start=False)
    text = to_json(make_decision(epoch=4))
    with caplog.at_level(logging.WARNING, logger="sluice.sources"):
        for cut in (10, 40, 80):  # three different half-written states
            target.write_text(text[:cut])
            source.poll_once()
            source.poll_once()  # the same bad bytes again: neither re-read nor re-counted
    view = source.view()
    assert view.decision is not None and view.decision.doc == good
    assert view.errors == 3
    assert "decision.json" in (view.last_error or "")
    assert len([r for r in caplog.records if "invalid JSON" in r.getMessage()]) == 1

    target.write_text(text)
    source.poll_once()
    assert source.view().decision.doc.epoch == 4  # type: ignore[union-attr]


def test_a_valid_json_that_is_not_a_decision_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "decision.json").write_text('{"kind": "Decision", "epoch": -1}')
    source = DirectoryDecisions(tmp_path, start=False)
    view = source.view()
    assert view.decision is None and view.errors == 1
    assert "not a valid document" in (view.last_error or "")


def test_a_missing_decision_is_counted_once(tmp_path: Path) -> None:
    source = DirectoryDecisions(tmp_path, start=False)
    for _ in range(5):
        source.poll_once()
    assert source.view().decision is None
    assert source.view().errors == 1


def test_local_mode_layout_with_circuits_in_subdirectories_and_extra_paths(tmp_path: Path) -> None:
    policy_dir = tmp_path / "shop" / "orders"
    policy_dir.mkdir(parents=True)
    (policy_dir / "decision.json").write_text(to_json(make_decision()))
    (policy_dir / "nested").mkdir()
    (policy_dir / "nested" / "circuit.json").write_text(to_json(make_circuit("nested", "half-open")))
    brokers = tmp_path / "shop" / "brokers"
    brokers.mkdir()
    (brokers / "circuit.json").write_text(to_json(make_circuit("brokers", "closed")))
    loose = tmp_path / "loose.json"
    loose.write_text(to_json(make_circuit("loose", "open")))

    source = DirectoryDecisions(policy_dir, circuit_paths=[brokers, loose], start=False)
    assert sorted(c.doc.name for c in source.view().circuits) == ["brokers", "loose", "nested"]

    (policy_dir / "nested").rename(tmp_path / "gone")  # a circuit's subdirectory removed as a whole
    source.poll_once()
    assert sorted(c.doc.name for c in source.view().circuits) == ["brokers", "loose"]


def test_kubelet_internal_directories_are_not_scanned_twice(tmp_path: Path) -> None:
    kubelet_write(tmp_path, {"decision.json": to_json(make_decision()), "circuit.json": to_json(make_circuit())})
    source = DirectoryDecisions(tmp_path, start=False)
    assert len(source.view().circuits) == 1


def test_poll_interval_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        DirectoryDecisions(tmp_path, poll_interval=0, start=False)
