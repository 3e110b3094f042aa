"""M3: PSC de-duplication, Gaussian memory attention and its loss, feature distillation, and the
memory system (registration, both tracks, hits on observed frames, checkpoints, all or nothing)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from embodied_mem.geometry import camera_mount, pinhole_camera
from embodied_mem.memory.m3 import M3Config
from embodied_mem.memory.m3.features import NO_FEATURE, feature_texts
from embodied_mem.memory.m3.gma import (
    attention,
    feature_loss,
    gaussian_memory_attention,
)
from embodied_mem.memory.m3.psc import (
    PrincipalSceneComponents,
    psc_reduce,
    reconstruction_error,
)
from embodied_mem.registry import build, names
from embodied_mem.types import Detection, Observation, Pose, Query

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------
# Principal scene components
# ----------------------------------------------------------------------------------------
def test_psc_threshold_boundary_is_inclusive():
    # cos((1, 0), (3, 4) / 5) is exactly 0.6 in floating point.
    features = np.array([[1.0, 0.0], [3.0, 4.0]])
    assert psc_reduce(features, 0.6).tolist() == [0]  # cos >= tau: covered, merged
    assert psc_reduce(features, np.nextafter(0.6, 1.0)).tolist() == [0, 1]  # just above: both kept


def test_psc_skips_a_row_whose_neighbour_is_covered_and_marks_nothing():
    """a ~ b, b ~ c, a !~ c: a is kept and covers b; c's neighbourhood holds the covered b, so c
    is skipped and has no bank entry at cos >= tau (the paper's coverage gap)."""
    tau = 0.8
    angle = math.acos(0.85)
    a = np.array([1.0, 0.0])
    b = np.array([math.cos(angle), math.sin(angle)])
    c = np.array([math.cos(2 * angle), math.sin(2 * angle)])  # cos(a, c) = 0.445
    bank = psc_reduce(np.stack([a, b, c]), tau)
    assert bank.tolist() == [0]
    assert reconstruction_error(np.stack([c]), np.stack([a]))[0] > 1 - tau
    assert psc_reduce(np.stack([c, b, a]), tau).tolist() == [0]  # order dependent: now c is the one kept
    # With a fourth row d ~ c only (not ~ b), d is kept on its own.
    d = np.array([math.cos(3 * angle), math.sin(3 * angle)])
    assert psc_reduce(np.stack([a, b, c, d]), tau).tolist() == [0, 3]


def test_psc_invariants_on_random_features():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 16))
    features = np.repeat(centres, 20, axis=0) + 0.3 * rng.standard_normal((120, 16))
    tau = 0.7
    kept = psc_reduce(features, tau)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    bank = unit[kept]
    cos = bank @ bank.T
    assert np.all(cos[~np.eye(len(kept), dtype=bool)] < tau)  # any two entries differ
    neighbourhoods = (unit[kept] @ unit.T) >= tau
    assert np.all(neighbourhoods.sum(axis=0) <= 1)  # the kept S_i are pairwise disjoint
    assert len(kept) < len(features) // 4
    raw = PrincipalSceneComponents(16, tau)
    raw.add([str(n) for n in range(len(features))], features)
    assert np.array_equal(raw.bank, features[kept].astype(np.float32))  # raw, unnormalised rows


def test_psc_edge_cases_and_reconstruction_error():
    assert psc_reduce(np.zeros((0, 3)), 0.9).tolist() == []
    assert psc_reduce(np.array([[0.0, 2.0, 0.0]]), 0.9).tolist() == [0]  # one row: kept
    with pytest.raises(ValueError, match="features"):
        psc_reduce(np.zeros(3), 0.9)
    with pytest.raises(ValueError, match="tau"):
        psc_reduce(np.eye(2), float("nan"))
    features = np.array([[1.0, 0.0], [3.0, 4.0], [0.0, 2.0]])
    bank = np.array([[2.0, 0.0]])
    np.testing.assert_allclose(reconstruction_error(features, bank), [0.0, 0.4, 1.0], atol=1e-12)
    np.testing.assert_allclose(reconstruction_error(features, np.zeros((0, 2))), [1.0, 1.0, 1.0])
    empty = PrincipalSceneComponents(2, 0.9)
    assert empty.bank.shape == (0, 2) and empty.kept.tolist() == []


def test_psc_table_adds_only_new_texts_and_checkpoints():
    table = PrincipalSceneComponents(2, 0.9)
    rows = table.add(["mug", "cup", "mug"], np.array([[1.0, 0.0], [0.99, 0.1], [1.0, 0.0]]))
    assert rows == [0, 1, 0] and table.texts == ["mug", "cup"]
    assert table.kept.tolist() == [0]  # cup merged into mug at cos 0.995
    assert table.add(["plate"], np.array([[0.0, 1.0]])) == [2]
    assert table.kept.tolist() == [0, 2]
    state, arrays = table.to_state()
    again = PrincipalSceneComponents.from_state(state, arrays, 2, 0.9)
    assert again.texts == table.texts and np.array_equal(again.bank, table.bank)
    tampered = dict(arrays, psc_kept=np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="greedy"):
        PrincipalSceneComponents.from_state(state, tampered, 2, 0.9)
    with pytest.raises(ValueError, match="tau"):
        PrincipalSceneComponents.from_state(state, arrays, 2, 0.8)
    for spoiled in (
        dict(arrays, psc_features=arrays["psc_features"].astype(np.int64)),
        dict(arrays, psc_features=arrays["psc_features"][:2]),
        dict(arrays, psc_features=np.where(np.eye(3, 2, dtype=bool), np.nan, arrays["psc_features"])),
        dict(arrays, psc_kept=arrays["psc_kept"].astype(np.float64)),
        dict(arrays, psc_kept=arrays["psc_kept"][None]),
    ):
        with pytest.raises(ValueError, match="psc_"):
            PrincipalSceneComponents.from_state(state, spoiled, 2, 0.9)


# ----------------------------------------------------------------------------------------
# Gaussian memory attention
# ----------------------------------------------------------------------------------------
def _independent_gma(q, P, M, T):
    e = q @ P
    ne = e / (np.linalg.norm(e, axis=-1, keepdims=True) + 1e-6)
    nm = M / (np.linalg.norm(M, axis=-1, keepdims=True) + 1e-6)
    logits = ne @ nm.T / T
    logits -= logits.max(axis=-1, keepdims=True)
    A = np.exp(logits)
    A /= A.sum(axis=-1, keepdims=True)
    return A, A @ M


def test_gma_matches_an_independent_computation():
    rng = np.random.default_rng(1)
    q, P, M = rng.standard_normal((7, 4)), rng.standard_normal((4, 12)), 3.0 * rng.standard_normal((5, 12))
    A, R = _independent_gma(q, P, M, 0.05)
    tq, tP, tM = (torch.tensor(x) for x in (q, P, M))
    np.testing.assert_allclose(attention(tq, tP, tM, 0.05).numpy(), A, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gaussian_memory_attention(tq, tP, tM, 0.05).numpy(), R, rtol=1e-9, atol=1e-12)
    assert M3Config().softmax_temp == 0.05  # the paper code's softmax_temp
    np.testing.assert_allclose(gaussian_memory_attention(tq, tP, tM).numpy(), R, rtol=1e-9)  # default T = 0.05
    np.testing.assert_allclose(attention(tq, tP, tM).numpy(), A, rtol=1e-9)
    target = torch.tensor(rng.standard_normal((7, 12)))
    assert feature_loss(tq, target, tP, tM)[0].item() == pytest.approx(feature_loss(tq, target, tP, tM, 0.05)[0].item(), rel=1e-12)
    assert feature_loss(tq, target, tP, tM)[0].item() != pytest.approx(feature_loss(tq, target, tP, tM, 1.05)[0].item(), rel=1e-6)
    # The eps is added to the norm (not a clamp): visible on tiny vectors.
    small = torch.tensor([[1e-6, 0.0]], dtype=torch.float64)
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    logits_first = (small[0, 0] / (1e-6 + 1e-6)) / 0.05
    expected = 1.0 / (1.0 + math.exp(-logits_first.item()))
    assert attention(small, torch.eye(2, dtype=torch.float64), bank, 0.05)[0, 0].item() == pytest.approx(expected, rel=1e-9)


def test_gma_rows_are_convex_and_sharpen_to_the_nearest_entry():
    rng = np.random.default_rng(2)
    q, P, M = (torch.tensor(rng.standard_normal(s)) for s in ((9, 3), (3, 8), (4, 8)))
    A = attention(q, P, M, 0.05)
    assert torch.allclose(A.sum(dim=1), torch.ones(9, dtype=A.dtype)) and (A >= 0).all()
    e = q @ P
    nearest = torch.argmax((e / e.norm(dim=1, keepdim=True)) @ (M / M.norm(dim=1, keepdim=True)).T, dim=1)
    sharp = gaussian_memory_attention(q, P, M, 1e-4)
    assert torch.allclose(sharp, M[nearest], atol=1e-6)
    with pytest.raises(ValueError):
        attention(q, P, M, 0.0)


def test_feature_loss_masks_all_zero_targets_and_normalises_l2():
    rng = np.random.default_rng(3)
    P, M = torch.tensor(rng.standard_normal((3, 6))), torch.tensor(rng.standard_normal((4, 6)))
    rendered = torch.tensor(rng.standard_normal((5, 3)))
    target = torch.tensor(rng.standard_normal((5, 6)))
    target[[1, 3]] = 0.0
    l_cos, l_l2 = feature_loss(rendered, target, P, M, 0.05)
    _, R = _independent_gma(rendered.numpy(), P.numpy(), M.numpy(), 0.05)
    keep = [0, 2, 4]
    cos = np.sum(R[keep] * target.numpy()[keep], axis=1) / (np.linalg.norm(R[keep], axis=1) * np.linalg.norm(target.numpy()[keep], axis=1))
    assert l_cos.item() == pytest.approx(np.mean(1 - cos), rel=1e-9)
    assert l_l2.item() == pytest.approx(np.sum((R[keep] - target.numpy()[keep]) ** 2) / (3 * 6), rel=1e-9)
    # Changing what a masked pixel rendered changes nothing.
    other = rendered.clone()
    other[[1, 3]] = 100.0
    assert feature_loss(other, target, P, M, 0.05)[0].item() == pytest.approx(l_cos.item(), rel=1e-12)
    zero = feature_loss(rendered, torch.zeros_like(target), P, M, 0.05)
    assert zero[0].item() == 0.0 and zero[1].item() == 0.0


# ----------------------------------------------------------------------------------------
# Feature distillation
# ----------------------------------------------------------------------------------------
def _frame(detections, depth_value=2.0, frame_id=0, stamp=0.0):
    camera = pinhole_camera(16, 12, 90.0, camera_mount(1.0, 0.3))
    depth = np.full((12, 16), depth_value, np.float32)
    depth[:, :4] = 0.0  # no return on the left
    return Observation(stamp, frame_id, np.zeros((12, 16, 3), np.uint8), depth, Pose.from_xy_yaw(0, 0, 0), camera, detections)


def test_feature_image_paints_small_masks_on_top_and_background_elsewhere():
    table = np.zeros((12, 16), bool)
    table[4:12, 0:16] = True
    mug = np.zeros((12, 16), bool)
    mug[6:8, 8:10] = True
    obs = _frame([Detection("mug", mug, attributes={"color": "red"}), Detection("table", table, kind="receptacle")])
    texts, labels = feature_texts(obs, 2, "background")
    assert labels.shape == (6, 8)
    assert texts[labels[3, 4]] == "red mug"  # render pixel (3, 4) samples full-res (7, 9): the mug, over the table
    assert texts[labels[4, 6]] == "table"
    assert texts[labels[0, 6]] == "background"
    assert (labels[:, :2] == NO_FEATURE).all()  # no depth: no feature
    texts, labels = feature_texts(obs, 2, None)
    assert "background" not in texts and labels[0, 6] == NO_FEATURE


# ----------------------------------------------------------------------------------------
# The memory system
# ----------------------------------------------------------------------------------------
FAST = {"name": "m3", "encoder": "gt_hash", "iterations": 3, "keyframe_distance": 2.0, "keyframe_angle_deg": 60.0, "keyframe_max_gap": 30, "max_new_points": 300}


@pytest.fixture(scope="module")
def fed(one_day):
    memory = build("memory", FAST)
    memory.set_floor_plan(one_day.episode.floor_plan())
    for obs in one_day.observations:
        memory.observe(obs)
    return memory


def answers(memory, near, tasks):
    out = []
    for task in tasks:
        for query in (Query(task.instruction, near=near, constraints=task.constraints), Query(task.instruction)):
            out.append([(h.frame_id, h.object_id, round(h.score, 9)) for h in memory.recall(query).hits])
    return out


def test_registered_and_config_mirrored_in_yaml():
    assert "m3" in names("memory")
    data = yaml.safe_load((REPO / "configs/memory/m3.yaml").read_text())
    assert data.pop("name") == "m3"
    defaults = dataclasses.asdict(M3Config())
    assert data == defaults


def test_ingest_builds_a_field_a_bank_and_keyframes(fed, one_day):
    report = fed.training_report()
    assert 5 <= report["keyframes"] < len(one_day.observations) // 3
    assert report["gaussians"] > 1000 and report["bank"] <= report["features"]
    stats = fed.stats()
    assert stats.items == report["gaussians"] and stats.frames_seen == len(one_day.observations)
    assert fed.stats() == stats  # the same numbers after a recall too
    fed.recall(Query("a mug"))
    assert fed.stats() == stats


def test_rendered_features_match_the_distilled_ones(fed):
    cosines = []
    for n in range(0, len(fed.keyframes), max(1, len(fed.keyframes) // 4)):
        out = fed.render_keyframe(n)
        target, rendered = out["distilled"], out["features"]
        has = np.abs(target).sum(axis=-1) > 0
        num = (target * rendered).sum(-1)[has]
        cosines.append(np.mean(num / (np.linalg.norm(target, axis=-1)[has] * np.linalg.norm(rendered, axis=-1)[has] + 1e-9)))
        assert np.abs(out["rgb"] - out["observed_rgb"] / 255.0).mean() < 0.15
    assert np.mean(cosines) > 0.6


def test_hits_name_observed_frames_in_both_tracks(fed, one_day):
    observed = {obs.frame_id for obs in one_day.observations}
    near = one_day.observations[-1].pose
    located = 0
    for task in one_day.tasks:
        for query in (Query(task.instruction, near=near, constraints=task.constraints), Query(task.instruction)):
            for hit in fed.recall(query).hits:
                assert hit.frame_id in observed and isinstance(hit.agent_pose, Pose)
                located += 1
    assert located > len(one_day.tasks)


def test_language_recall_finds_a_seen_object_where_the_tracker_has_it(fed):
    tracks = [t for t in fed.tracker.confirmed() if t.kind == "object" and t.moved_at is None]
    found = 0
    for track in tracks[:6]:
        from embodied_mem.perception import describe

        hits = fed.recall(Query(describe(track.category, track.attribute_values), k=3)).hits
        if any(np.linalg.norm(h.target_xyz - track.position) < 1.0 for h in hits):
            found += 1
    assert found >= max(1, len(tracks[:6]) // 2)


def test_refined_position_is_the_weighted_mean_of_matching_gaussians(fed):
    for track in fed.tracker.confirmed():
        position, support = fed._refined(track)
        if support < fed.config.refine_min_gaussians:
            continue
        weights, _ = fed._gaussian_features()
        from embodied_mem.perception import describe

        entry = fed.bank_entry_of(fed.encoder.encode([describe(track.category, track.attribute_values)])[0])
        means, opacity = fed.field.means.numpy(), fed.field.opacities.numpy()
        margin = fed.config.refine_margin
        inside = np.all((means >= track.box_min - margin) & (means <= track.box_max + margin), axis=1) & (opacity >= fed.config.min_opacity)
        match = inside & (weights.argmax(axis=1) == entry)
        np.testing.assert_allclose(position, np.average(means[match], axis=0, weights=opacity[match]), atol=1e-5)
        assert support == int(match.sum())
        return
    pytest.fail("no track was refined by the field")


def test_save_load_round_trip_and_corrupt_checkpoints(fed, one_day, tmp_path):
    near = one_day.observations[-1].pose
    tasks = one_day.tasks[:6]
    before = answers(fed, near, tasks)
    fed.save(tmp_path / "ckpt")
    other = build("memory", FAST)
    other.load(tmp_path / "ckpt")
    assert other.stats() == fed.stats()
    assert answers(other, near, tasks) == before
    # A flipped byte is refused and changes nothing.
    version = (tmp_path / "ckpt" / (tmp_path / "ckpt" / "CURRENT").read_text().strip())
    data = bytearray((version / "arrays.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (version / "arrays.npz").write_bytes(bytes(data))
    stats = other.stats()
    with pytest.raises(ValueError):
        other.load(tmp_path / "ckpt")
    assert other.stats() == stats and answers(other, near, tasks) == before


def test_observe_is_all_or_nothing(one_day, monkeypatch):
    memory = build("memory", FAST)
    stream = one_day.observations[:40]
    for obs in stream[:30]:
        memory.observe(obs)
    near = stream[29].pose
    tasks = one_day.tasks[:4]
    stats, before, report = memory.stats(), answers(memory, near, tasks), memory.training_report()
    from embodied_mem.memory.m3 import system

    def broken(*args, **kwargs):
        raise RuntimeError("fit failed")

    monkeypatch.setattr(system, "fit", broken)
    keyframe = next(obs for obs in stream[30:] if memory._is_keyframe(obs))
    with pytest.raises(RuntimeError):
        memory.observe(keyframe)
    monkeypatch.undo()
    monkeypatch.setattr(memory.tracker, "frame", broken)
    with pytest.raises(RuntimeError):
        memory.observe(keyframe)
    monkeypatch.undo()
    assert memory.stats() == stats and memory.training_report() == report and answers(memory, near, tasks) == before
    memory.observe(keyframe)  # and the frame is taken afterwards
    assert memory.stats().frames_seen == stats.frames_seen + 1
    memory.observe(keyframe)  # idempotent
    assert memory.stats().frames_seen == stats.frames_seen + 1


def test_keyframe_rule(one_day):
    memory = build("memory", dict(FAST, keyframe_distance=1.0, keyframe_angle_deg=30.0, keyframe_max_gap=5))
    first = one_day.observations[0]
    assert memory._is_keyframe(first)
    memory.observe(first)
    still = one_day.observations[0]
    moved = Observation(first.stamp + 1, 99_001, first.rgb, first.depth, Pose(first.pose.position + [1.0, 0, 0], first.pose.orientation), first.camera)
    nearly = Observation(first.stamp + 1, 99_002, first.rgb, first.depth, Pose(first.pose.position + [0.99, 0, 0], first.pose.orientation), first.camera)
    def turn(degrees, frame_id):
        return Observation(first.stamp + 1, frame_id, first.rgb, first.depth, Pose.from_xy_yaw(*first.pose.position[:2], first.pose.yaw + math.radians(degrees), z=first.pose.position[2]), first.camera)

    assert memory._is_keyframe(moved) and not memory._is_keyframe(nearly)
    assert memory._is_keyframe(turn(30.01, 99_003)) and memory._is_keyframe(turn(-30.01, 99_005)) and not memory._is_keyframe(turn(29.9, 99_006))
    assert not memory._is_keyframe(still)
    memory._since_keyframe = 4
    assert memory._is_keyframe(still)  # the 5th frame since
    blind = Observation(first.stamp + 1, 99_004, first.rgb, np.zeros_like(first.depth), moved.pose, first.camera)
    assert not memory._is_keyframe(blind)
