"""The command line, end to end: a real evaluation on the embedded simulator."""

import json
import subprocess
import sys

import pytest

from embodied_mem.sim.tasks.generator import CATEGORIES

SUMMARY_KEYS = {
    "memory", "sim", "perception", "track", "episodes", "tasks", "success_rate", "high_level_accuracy", "by_category",
    "ingest_fps", "recall_ms_p50", "recall_ms_p95", "memory_bytes", "frames", "seed", "config",
    "high_level_dtg", "high_level_sem_cov", "upper_bound",
}
SMALL = ["sim=embedded_small", "eval.progress=false"]


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "embodied_mem.cli", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_eval_writes_every_result_file(tmp_path):
    run = cli("eval", "memory=frame_bank", "track=oracle", "eval.episodes=2", "sim.history.days=2", f"output_dir={tmp_path}", "run_name=fb", *SMALL)
    assert run.returncode == 0, run.stderr[-2000:]
    out = tmp_path / "fb"
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["memory"] == "frame_bank" and summary["track"] == "oracle" and summary["episodes"] == 2
    assert summary["perception"] == "detector" and summary["upper_bound"] is False  # the default: no ids
    assert len(summary["by_category"]) >= len(CATEGORIES) - 2  # two days express (nearly) every category
    assert summary["success_rate"] > 0.5  # every frame kept, its own association: most tasks answered
    assert summary["frames"] > 200 and summary["memory_bytes"] > 0 and summary["recall_ms_p95"] >= summary["recall_ms_p50"]
    rows = (out / "tasks.csv").read_text().splitlines()
    assert len(rows) == summary["tasks"] + 1
    png = (out / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 30_000
    assert "success rate" in run.stdout and "Interaction Order" in run.stdout


def test_help_explains_the_verbs_and_options():
    top = cli("--help")
    assert top.returncode == 0 and "eval" in top.stdout and "compare" in top.stdout
    verb = cli("eval", "--help")
    assert verb.returncode == 0 and "track=oracle|language" in verb.stdout and "frame_bank" in verb.stdout


def test_bad_configuration_is_one_clear_error():
    unknown = cli("eval", "memory.colour=red", *SMALL)
    assert unknown.returncode == 2 and "error" in unknown.stderr and "colour" in unknown.stderr
    added = cli("eval", "+memory.colour=red", *SMALL)
    assert added.returncode == 2 and "unknown config key(s) ['colour']" in added.stderr
    track = cli("eval", "track=telepathy", *SMALL)
    assert track.returncode == 2 and "track must be one of" in track.stderr
    verb = cli("evaluate")
    assert verb.returncode == 2 and "unknown verb" in verb.stderr


@pytest.mark.slow
def test_compare_puts_the_floors_beside_every_system_and_names_the_perception(tmp_path):
    docs = tmp_path / "docs" / "results.md"
    run = cli(
        "compare", "compare.memories=[frame_bank,subsampled_frames]", "compare.tracks=[oracle]", "compare.perceptions=[detector,gt]",
        "sim.history.days=2", f"compare.docs={docs}", "encoder=gt_hash", f"output_dir={tmp_path}", "run_name=cmp", *SMALL,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    text = docs.read_text()
    assert "### oracle track, perception `detector`" in text and "### oracle track, perception `gt` (upper bound)" in text
    for column in ("frame_bank", "subsampled_frames", "diary_only *(floor)*", "stay *(floor)*", "chance *(floor)*"):
        assert text.count(f"| {column}") + text.count(f" {column} |") >= 1, column
    assert "Produced by `embodied-mem compare" in text and "commit" in text
    assert (docs.parent / "results.png").stat().st_size > 20_000

    def summary(name, mode):
        return json.loads((tmp_path / "cmp" / f"{name}-oracle-{mode}" / "summary.json").read_text())

    bank, diary, stay = summary("frame_bank", "detector"), summary("diary_only", "detector"), summary("stay", "detector")
    assert bank["tasks"] == diary["tasks"] > 30  # the same episodes and tasks for everyone
    assert diary["success_rate"] <= 0.2 and stay["success_rate"] <= 0.1  # the floors measure (almost) nothing
    assert bank["success_rate"] >= diary["success_rate"] + 0.4  # remembering is what scores
    assert diary["high_level_accuracy"] == 0.0  # it names no frame
    assert summary("frame_bank", "gt")["perception"] == "gt" and summary("frame_bank", "gt")["upper_bound"] is True
    assert bank["success_rate"] > summary("subsampled_frames", "detector")["success_rate"]  # 96 frames forget most


@pytest.mark.slow
def test_viz_draws_the_memory_and_saves_a_loadable_checkpoint(tmp_path):
    run = cli("viz", "memory=mem4nav", "encoder=gt_hash", f"output_dir={tmp_path}", "run_name=v", *SMALL)
    assert run.returncode == 0, run.stderr[-2000:]
    png = (tmp_path / "v" / "mem4nav.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    from embodied_mem.registry import build

    memory = build("memory", {"name": "mem4nav", "encoder": "gt_hash"})
    memory.load(tmp_path / "v" / "mem4nav-checkpoint")
    assert memory.stats().frames_seen > 100


@pytest.mark.slow
def test_viz_draws_several_memories_side_by_side(tmp_path):
    run = cli("viz", "viz.memories=[frame_bank,subsampled_frames]", "encoder=gt_hash", f"output_dir={tmp_path}", "run_name=s", *SMALL)
    assert run.returncode == 0, run.stderr[-2000:]
    png = (tmp_path / "s" / "memories.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
