"""The memory stack: parallel equals sequential, reciprocal rank fusion by its formula, the
router's weights, checkpoints, and the stack through the real harness."""

from __future__ import annotations

import numpy as np
import pytest

from embodied_mem.stack import MemoryStack, StackConfig, query_kind
from embodied_mem.types import Hit, Pose, Query, Recall

MEMBERS = ["mem4nav", "frame_bank"]


def fed(one_day, **options):
    stack = MemoryStack(StackConfig(systems=list(MEMBERS), encoder="gt_hash", **options))
    stack.set_floor_plan(one_day.episode.floor_plan())
    for obs in one_day.observations:
        stack.observe(obs)
    return stack


def answers(stack, one_day):
    near = one_day.observations[-1].pose
    out = []
    for task in one_day.tasks:
        recall = stack.recall(Query(task.instruction, k=3, near=near, constraints=task.constraints))
        out.append([(h.frame_id, h.goal_index, round(h.score, 9), tuple(h.evidence["systems"])) for h in recall.hits])
    return out


@pytest.fixture(scope="module")
def stacks(one_day):
    return fed(one_day, parallel=True), fed(one_day, parallel=False)


def test_parallel_equals_sequential(stacks, one_day):
    parallel, sequential = stacks
    assert parallel.stats() == sequential.stats()
    assert answers(parallel, one_day) == answers(sequential, one_day)
    assert parallel.stats().frames_seen == len(one_day.observations)
    assert parallel.stats().bytes == sum(m.stats().bytes for m in parallel.members)


def hit(x, score, goal=0, system="a"):
    return Hit(1, 0.0, Pose.from_xy_yaw(x, 0.0, 0.0), np.array([x, 0.0, 0.5]), None, score, system, {"goal_index": goal})


def test_rrf_follows_its_formula_and_groups_one_place(one_day):
    stack = MemoryStack(StackConfig(systems=list(MEMBERS), encoder="gt_hash", router="none", rrf_k=60.0, merge_radius=0.5))
    a = Recall([hit(0.0, 0.9, system="mem4nav"), hit(5.0, 0.5, system="mem4nav")], "mem4nav", 0.0)
    b = Recall([hit(5.2, 0.8, system="frame_bank"), hit(0.1, 0.1, system="frame_bank")], "frame_bank", 0.0)
    fused = stack.fuse(Query("x", k=5), [a, b])
    # place x=0: rank 1 in mem4nav, rank 2 in frame_bank; place x=5: rank 2 and rank 1.
    expected = 1 / 61 + 1 / 62
    assert len(fused) == 2
    assert all(abs(h.score - expected) < 1e-12 for h in fused)
    assert {tuple(h.evidence["systems"]) for h in fused} == {("frame_bank", "mem4nav")}
    far = MemoryStack(StackConfig(systems=list(MEMBERS), encoder="gt_hash", router="none", merge_radius=0.05))
    assert len(far.fuse(Query("x", k=5), [a, b])) == 4  # nothing within 5 cm: four places


def test_the_router_weighs_members_by_what_they_are_good_at():
    stack = MemoryStack(StackConfig(systems=["mem4nav", "subsampled_frames"], encoder="gt_hash", off_strength_weight=0.25))
    mem4nav, subsampled = stack.members
    temporal = Query("x", constraints={"goals": [{"target": "object", "day": 0, "select": {"by": "order", "index": 0}}], "ordered": False})
    spatial = Query("x", constraints={"goals": [{"target": "object", "day": None, "category": "mug"}], "ordered": False})
    assert query_kind(temporal) == "temporal" and query_kind(spatial) == "spatial"
    assert stack.weight(mem4nav, "temporal") == 0.25 and stack.weight(subsampled, "temporal") == 1.0
    assert stack.weight(mem4nav, "spatial") == 1.0 and stack.weight(subsampled, "spatial") == 0.25
    a = Recall([hit(0.0, 0.9, system="mem4nav")], "mem4nav", 0.0)
    b = Recall([hit(5.0, 0.9, system="subsampled_frames")], "subsampled_frames", 0.0)
    best = stack.fuse(temporal, [a, b])[0]
    assert best.evidence["member"] == "subsampled_frames"
    assert stack.fuse(spatial, [a, b])[0].evidence["member"] == "mem4nav"


def test_bad_config_is_refused():
    for options, message in [({"systems": []}, "at least one"), ({"systems": ["stack"]}, "cannot hold a stack"),
                             ({"systems": ["frame_bank", "frame_bank"]}, "once"), ({"fusion": "vote"}, "fusion"),
                             ({"systems": ["frame_bank"], "weights": {"mem4nav": 2}}, "not in the stack")]:
        with pytest.raises(ValueError, match=message):
            MemoryStack(StackConfig(**{"encoder": "gt_hash", **options}))


def test_checkpoint_round_trip_and_refusal(stacks, one_day, tmp_path):
    parallel, _ = stacks
    parallel.save(tmp_path / "ckpt")
    parallel.save(tmp_path / "ckpt")  # a second save keeps one previous members folder, no more
    assert len(list((tmp_path / "ckpt").glob("members-*"))) == 2
    restored = MemoryStack(StackConfig(systems=list(MEMBERS), encoder="gt_hash"))
    restored.load(tmp_path / "ckpt")
    assert restored.stats() == parallel.stats()
    assert answers(restored, one_day) == answers(parallel, one_day)
    other = MemoryStack(StackConfig(systems=["frame_bank", "mem4nav"], encoder="gt_hash"))
    with pytest.raises(ValueError):
        other.load(tmp_path / "ckpt")
    assert other.stats().frames_seen == 0  # refused: nothing swapped in


def test_the_stack_runs_in_the_harness():
    from embodied_mem.eval.runner import RunSpec, run, summarize

    from conftest import small_sim

    spec = RunSpec(memories=[{"name": "stack", "systems": list(MEMBERS), "encoder": "gt_hash"}], tracks=["oracle"], episodes=1, seed=3,
                   sim=small_sim(days=1, rearrangements=3), progress=False)
    summary = summarize(run(spec)[("stack", "oracle")], spec, {})
    assert summary["tasks"] > 10 and summary["success_rate"] > 0.5


def test_report_runs_every_registered_system_the_stack_and_the_floors(monkeypatch):
    import embodied_mem.cli as cli
    from embodied_mem.registry import names

    seen = {}
    monkeypatch.setattr(cli, "cmd_compare", lambda cfg: seen.setdefault("cfg", cfg) and 0)
    cli.cmd_report(cli.compose(["eval.episodes=1"]))
    cfg = seen["cfg"]
    systems = [str(m) for m in cfg.compare.memories]
    assert systems[-1] == "stack" and set(systems) == set(names("memory")) - {"diary_only", "stay", "chance"}
    assert [str(p) for p in cfg.compare.perceptions] == ["detector", "gt"] and [str(t) for t in cfg.compare.tracks] == ["oracle", "language"]
    assert str(cfg.compare.docs) == "docs/results.md"


def test_report_says_how_the_stack_stands_against_the_best_single_system():
    from embodied_mem.cli import stack_versus_best

    def summary(memory, rate, by):
        return {"memory": memory, "track": "oracle", "perception": "detector", "success_rate": rate, "by_category": by}

    text = stack_versus_best([summary("mem4nav", 0.8, {"Time-Based": 0.9, "Object Recall": 0.7}), summary("frame_bank", 0.7, {}),
                              summary("stack", 0.75, {"Time-Based": 0.6, "Object Recall": 0.9}), summary("chance", 0.9, {})])
    assert "falls short of the best single system, `mem4nav` (80 %), by 5 points" in text  # the floor is not a system
    assert "Time-Based (-30)" in text and "Object Recall" not in text.split("Where it is behind:")[1]
