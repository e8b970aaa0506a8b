"""The whole flow as a user runs it, on tiny sizes: `spikeport demo --quick` and `reproduce`."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from spikeport.io import read_json_model
from spikeport.schemas import Energy, Stats


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SPIKEPORT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_quick_demo_writes_every_report_section(tmp_path: Path, cache: Path) -> None:
    from spikeport.demo import run_demo

    out = run_demo(tmp_path / "demo", quick=True)
    for modality in ("visual", "audio"):
        run = out / f"{modality}-baseline"
        text = (run / "report" / "energy.md").read_text()
        for section in ("## Summary", "## Baseline: gpu-jetson-orin-nano", "## loihi2:", "## speck:",
                        "## The papers' shortcut", "## What this report includes and excludes"):
            assert section in text, f"{modality}: missing {section!r}"
        energy = read_json_model(run / "report" / "energy.json", Energy)
        assert set(energy.chips) == {"loihi2", "speck"}
        assert (run / "report" / "energy.png").stat().st_size > 0
        # The demo's Lava run and fast run of the same samples agree spike for spike in their counts.
        lava = read_json_model(run / "deploy" / "loihi2" / "stats_lava.json", Stats)
        fast = read_json_model(run / "deploy" / "loihi2" / "stats.json", Stats)
        assert lava.engine == "lava" and fast.engine == "fast"
        for chip in ("loihi2", "speck"):
            stats = read_json_model(run / "deploy" / chip / "stats.json", Stats)
            # energy terms are the counts times the profile figures: synops must be there
            assert sum(layer.synops for layer in stats.per_sample) > 0


def test_reproduce_tiny_writes_every_table_and_figure(tmp_path: Path, cache: Path) -> None:
    from spikeport.data.registry import generate
    from spikeport.reproduce import QUICK, TINY, RunRow, kept_rows, reproduce

    root = tmp_path / "data"
    for name in ("nmnist-embedded", "shd-embedded"):
        generate(name, root=root, n=60)
    # An earlier run's table with the same schedule: a --models subset keeps its other rows and
    # replaces its own; one with another schedule is not mixed in.
    (tmp_path / "results").mkdir()
    earlier = {"date": "2026-01-02T00:00:00", "variant": "chip-native", "schedule": asdict(TINY), "real": False,
               "rows": [asdict(RunRow(model="hopfield", modality="audio", dataset="shd-embedded", run="r", seed=0,
                                      float_accuracy=0.5)),
                        asdict(RunRow(model="baseline", modality="audio", dataset="shd-embedded", run="r", seed=0,
                                      float_accuracy=0.123456))]}
    (tmp_path / "results" / "reproduce.json").write_text(json.dumps(earlier))
    rows = reproduce(out=tmp_path / "results", runs=tmp_path / "runs", root=root, schedule=TINY,
                     models=["baseline"])
    assert [(r.model, r.modality) for r in rows] == [("baseline", "visual"), ("baseline", "audio")]
    merged = json.loads((tmp_path / "results" / "reproduce.json").read_text())
    assert [(r["model"], r["modality"]) for r in merged["rows"]] == \
        [("baseline", "visual"), ("baseline", "audio"), ("hopfield", "audio")]
    assert merged["kept_from"] == ["2026-01-02"] and merged["models_run"] == ["baseline"]
    text = (tmp_path / "results" / "accuracy.md").read_text()
    assert "| hopfield |  |  |  | 50.00 |" in text and "12.35" not in text
    assert "the other rows are kept from earlier runs with the same variant, schedule and data: hopfield " \
        "from the run of 2026-01-02." in text
    assert kept_rows(tmp_path / "results", ["baseline"], "chip-native", QUICK, False) == ([], None)
    for name in ("accuracy.md", "deployment.md", "accuracy.png", "reproduce.json", "summary.md"):
        assert (tmp_path / "results" / name).stat().st_size > 0, name
    table = (tmp_path / "results" / "accuracy.md").read_text()
    assert "| baseline |" in table and "96.77 / 80.04" in table  # the paper's row beside ours
    record = json.loads((tmp_path / "results" / "reproduce.json").read_text())
    for row in record["rows"]:
        if row["model"] != "baseline":
            continue  # the kept row of the earlier table has no run folder
        assert row["error"] is None
        for chip in ("loihi2", "speck"):
            stats = read_json_model(Path(row["run"]) / "deploy" / chip / "stats.json", Stats)
            assert row["chips"][chip]["accuracy"] == pytest.approx(stats.accuracy)


def test_reproduce_subset_plans_one_modality_and_keeps_the_rest(tmp_path: Path) -> None:
    """``--models hgrn:audio,joint`` runs hgrn on audio only and joint; every other (model,
    modality) row of an earlier table with the same schedule is kept, joint's two rows are not."""
    from spikeport.errors import SpikeportError
    from spikeport.reproduce import QUICK, TINY, RunRow, kept_rows, plan

    datasets = {"visual": "v", "audio": "a", "joint": "v+a", "audiovisual": "av"}
    todo = plan(["hgrn:audio", "joint"], datasets)
    assert todo == [("hgrn", "audio", "a"), ("joint", "joint", "v+a")]
    with pytest.raises(SpikeportError, match="take a modality"):
        plan(["joint:audio"], datasets)
    earlier = [RunRow(model=m, modality=mod, dataset="d", run="r", float_accuracy=0.5)
               for m, mod in (("hgrn", "visual"), ("hgrn", "audio"), ("joint", "visual"), ("joint", "audio"),
                              ("baseline", "audio"))]
    (tmp_path / "reproduce.json").write_text(json.dumps(
        {"date": "2026-01-02T00:00:00", "variant": "chip-native", "schedule": asdict(QUICK), "real": False,
         "rows": [asdict(r) for r in earlier]}))
    kept, date = kept_rows(tmp_path, todo, "chip-native", QUICK, False)
    assert [(r.model, r.modality) for r in kept] == [("hgrn", "visual"), ("baseline", "audio")] and date == "2026-01-02"
    assert {r.date for r in kept} == {"2026-01-02"}  # rows without their day get the file's
    assert kept_rows(tmp_path, todo, "chip-native", TINY, False) == ([], None)
    assert kept_rows(tmp_path, todo, "paper", QUICK, False) == ([], None)


def test_reproduce_cli_passes_seeds_and_refuses_zero(monkeypatch, tmp_path: Path) -> None:
    """``spikeport reproduce --seed 3 --seeds 5`` asks for seeds 3..7; ``--seeds 0`` is refused."""
    from typer.testing import CliRunner

    import spikeport.reproduce as rep
    from spikeport.cli import app

    got = {}
    monkeypatch.setattr(rep, "reproduce", lambda **kw: got.update(kw) or [])
    res = CliRunner().invoke(app, ["reproduce", "--out", str(tmp_path), "--models", "scmrl",
                                   "--seed", "3", "--seeds", "5"])
    assert res.exit_code == 0, res.output
    assert got["seed"] == 3 and got["seeds"] == 5 and got["models"] == ["scmrl"]
    res = CliRunner().invoke(app, ["reproduce", "--out", str(tmp_path), "--seeds", "0"])
    assert res.exit_code != 0 and "seeds" in res.output
