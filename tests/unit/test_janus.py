"""JanusVLN's dual implicit memory: the checklist's section 7 invariants, and the memory system.

Cache invariants use small random encoders fed random tokens (fp32); the system tests use the
recorded ``one_day`` episode (234 frames, so the 56-frame window has evicted most of them).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from embodied_mem.memory.janus.attention import CachedTransformer, Shape, start_recent_mask
from embodied_mem.memory.janus.cache import FrameSliceLayer, StartRecentCache
from embodied_mem.memory.janus.dual import DualImplicitMemory
from embodied_mem.registry import build
from embodied_mem.types import Query

START, RECENT = 8, 48


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: more threads only fight over a shared CPU (100x slower measured on 2 cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
SMALL = Shape(dim=16, heads=2, layers=3, grid=2, mlp_ratio=2.0)
SPATIAL = Shape(dim=8, heads=2, layers=2, grid=2, mlp_ratio=2.0)


def random_frames(count: int, shape: Shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, shape.tokens, shape.dim, generator=torch.Generator().manual_seed(seed))


def simulated_visibility(count: int, start: int = START, recent: int = RECENT) -> tuple[torch.Tensor, list[list[int]]]:
    """By plain list bookkeeping: which frames frame i attends (kept before it + itself), and what
    is kept after each step (the first ``start`` and the last ``recent`` of kept + new)."""
    visible = torch.zeros(count, count, dtype=torch.bool)
    kept: list[int] = []
    after = []
    for i in range(count):
        seen = kept + [i]
        visible[i, seen] = True
        kept = seen if len(seen) <= start + recent else seen[:start] + seen[-recent:]
        after.append(list(kept))
    return visible, after


def stepped(net: CachedTransformer, frames: torch.Tensor, ids=None) -> tuple[torch.Tensor, StartRecentCache]:
    cache = net.new_cache(START, RECENT)
    ids = range(len(frames)) if ids is None else ids
    return torch.stack([net.step(frames[t], cache, frame_id) for t, frame_id in enumerate(ids)]), cache


# ---------------------------------------------------------------------------------------- cache
def test_every_layer_of_both_caches_holds_min_t_56_frames_with_k_and_v_agreeing():
    memory = DualImplicitMemory(SMALL, SPATIAL, START, RECENT, seed=1)
    semantic, spatial = random_frames(70, SMALL), random_frames(70, SPATIAL, seed=1)
    for t in range(1, 71):
        memory.step(semantic[t - 1], spatial[t - 1], frame_id=t)
        for name, cache in memory.caches.items():
            for layer in cache.layers:
                assert layer.frames == min(t, START + RECENT), (name, t)
                assert layer.keys.shape == layer.values.shape
                assert layer.keys.shape[-2] == min(t, START + RECENT) * cache.tokens_per_frame
    bytes_at_56 = None
    for t in range(71, 200):  # memory flat once full
        memory.step(semantic[t % 70], spatial[t % 70], frame_id=t)
        bytes_at_56 = bytes_at_56 or memory.nbytes()
    assert memory.nbytes() == bytes_at_56


def test_eviction_keeps_exactly_the_first_8_and_last_48_frames_by_id_in_every_layer():
    memory = DualImplicitMemory(SMALL, SPATIAL, START, RECENT, seed=2)
    semantic, spatial = random_frames(90, SMALL, 3), random_frames(90, SPATIAL, 4)
    ids = [1000 + 7 * n for n in range(90)]  # ids are not positions
    slices = {}
    for t, frame_id in enumerate(ids):
        memory.step(semantic[t], spatial[t], frame_id)
        for name, cache in memory.caches.items():
            for n, layer in enumerate(cache.layers):
                slices[name, n, frame_id] = layer.frame_slice(layer.frames - 1)  # the frame just added
        _, after = simulated_visibility(t + 1)
        expected = [ids[i] for i in after[-1]]
        for name, cache in memory.caches.items():
            for n in range(len(cache.layers)):
                assert cache.frame_ids(n) == expected, (name, n, t)
    assert memory.frame_ids() == ids[:START] + ids[-RECENT:]
    for name, cache in memory.caches.items():  # the kept slices are the frames' own K / V, whole
        for n, layer in enumerate(cache.layers):
            for row, frame_id in enumerate(cache.frame_ids(n)):
                keys, values = layer.frame_slice(row)
                assert torch.equal(keys, slices[name, n, frame_id][0]) and torch.equal(values, slices[name, n, frame_id][1])


def test_frame_slice_layer_evicts_whole_frames_only_past_capacity():
    layer = FrameSliceLayer(tokens_per_frame=3, start=2, recent=3)
    for frame_id in range(5):
        layer.update(torch.full((1, 1, 3, 2), float(frame_id)), torch.full((1, 1, 3, 2), -float(frame_id)), frame_id)
    assert layer.frame_ids.tolist() == [0, 1, 2, 3, 4]  # exactly at capacity: nothing evicted
    keys, _ = layer.update(torch.full((1, 1, 3, 2), 5.0), torch.full((1, 1, 3, 2), -5.0), 5)
    assert keys.shape[-2] == 18  # the new frame attended over all six frames, then eviction
    assert layer.frame_ids.tolist() == [0, 1, 3, 4, 5]
    assert layer.keys[0, 0, :, 0].tolist() == [0.0] * 3 + [1.0] * 3 + [3.0] * 3 + [4.0] * 3 + [5.0] * 3
    assert layer.values[0, 0, :, 0].tolist() == [-v for v in layer.keys[0, 0, :, 0].tolist()]
    with pytest.raises(ValueError, match="tokens_per_frame|\\[1, heads, 3"):
        layer.update(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 6)
    full = FrameSliceLayer(tokens_per_frame=1, start=0, recent=None)  # the benchmark's full history
    for frame_id in range(100):
        full.update(torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2), frame_id)
    assert full.frames == 100


def test_cache_defaults_are_upstreams_and_bad_shapes_are_refused():
    from embodied_mem.memory.janus.system import JanusConfig

    assert (FrameSliceLayer(1).start, FrameSliceLayer(1).recent) == (8, 48)
    cache = StartRecentCache(2, 3)
    assert (cache.start, cache.recent, cache.layers[1].capacity) == (8, 48, 56)
    assert (JanusConfig().start_frames, JanusConfig().recent_frames, JanusConfig().lam) == (8, 48, 0.2)
    for bad in ({"tokens_per_frame": 0}, {"tokens_per_frame": 1, "start": -1}, {"tokens_per_frame": 1, "recent": 0}):
        with pytest.raises(ValueError, match="bad cache shape"):
            FrameSliceLayer(**bad)
    FrameSliceLayer(1, start=0, recent=1)  # the smallest cache is allowed
    with pytest.raises(ValueError, match="num_layers"):
        StartRecentCache(0, 3)
    StartRecentCache(1, 3)
    layer = FrameSliceLayer(2)
    assert layer.nbytes() == 0 and StartRecentCache(1, 2).nbytes() == 0
    sized = FrameSliceLayer(2)
    sized.update(torch.zeros(1, 3, 2, 4), torch.zeros(1, 3, 2, 4), 7)
    assert sized.nbytes() == 2 * (3 * 2 * 4 * 4) + 8  # K + V float32, one int64 frame id
    with pytest.raises(ValueError, match="K and V"):
        layer.update(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 3), 0)
    with pytest.raises(ValueError, match="K and V"):
        layer.update(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4), 0)


def test_cache_arrays_that_do_not_fit_are_refused():
    net = CachedTransformer(SMALL, seed=31)
    _, cache = stepped(net, random_frames(10, SMALL, 32))
    good = cache.to_arrays()
    assert cache.from_arrays(good).frame_ids(2) == list(range(10))
    empty = StartRecentCache(3, SMALL.tokens)
    assert empty.from_arrays(empty.to_arrays()).frames == 0
    cases = [
        ("1.frame_ids", np.arange(9), "another layer"),
        ("0.frame_ids", np.arange(10.0), "int"),
        ("2.values", np.full_like(good["2.values"], np.nan), "NaN"),
        ("0.keys", good["0.keys"].astype(np.int64), "float"),
    ]
    for name, value, message in cases:
        arrays = dict(good, **{name: value})
        with pytest.raises(ValueError, match=message):
            cache.from_arrays(arrays)
    arrays = {k: v for k, v in good.items() if k != "2.keys"}
    with pytest.raises(ValueError, match="missing"):
        cache.from_arrays(arrays)
    arrays = dict(empty.to_arrays(), **{"0.keys": np.zeros((1, 2, 5, 8), np.float32)})
    with pytest.raises(ValueError, match="without frames"):
        empty.from_arrays(arrays)
    assert cache.from_arrays(good, heads=SMALL.heads, head_dim=SMALL.head_dim).frames == 10
    with pytest.raises(ValueError, match="expected"):
        cache.from_arrays(good, heads=SMALL.heads + 1)


# ---------------------------------------------------------------------------------------- attention
def test_incremental_output_equals_the_full_causal_recompute_up_to_56_frames():
    net = CachedTransformer(SMALL, seed=5)
    frames = random_frames(START + RECENT, SMALL, 6)
    outputs, _ = stepped(net, frames)
    causal = torch.tril(torch.ones(len(frames), len(frames), dtype=torch.bool))
    reference = net.forward_frames(frames, causal)
    torch.testing.assert_close(outputs, reference, atol=1e-5, rtol=0)
    # and the frames really see each other (a frame-local net would not match a changed past)
    changed = frames.clone()
    changed[0] += torch.randn(changed[0].shape, generator=torch.Generator().manual_seed(99))
    assert (net.forward_frames(changed, causal)[-1] - reference[-1]).abs().max() > 1e-4


def test_incremental_output_equals_the_recompute_over_the_kept_frames_after_56():
    net = CachedTransformer(SMALL, seed=7)
    count = 100
    frames = random_frames(count, SMALL, 8)
    outputs, _ = stepped(net, frames)
    visible, _ = simulated_visibility(count)
    assert torch.equal(start_recent_mask(count, START, RECENT), visible)
    # Every frame's keys were computed while the frames it saw then were present: the joint
    # recompute with each frame's own visibility row reproduces that, layer by layer.
    torch.testing.assert_close(outputs, net.forward_frames(frames, visible), atol=1e-5, rtol=0)
    causal = net.forward_frames(frames, torch.tril(torch.ones(count, count, dtype=torch.bool)))
    assert (outputs[START + RECENT + 1 :] - causal[START + RECENT + 1 :]).abs().max() > 1e-4  # eviction matters
    torch.testing.assert_close(outputs[: START + RECENT + 1], causal[: START + RECENT + 1], atol=1e-5, rtol=0)


def test_the_cache_stores_keys_before_k_norm_and_rope():
    net = CachedTransformer(SMALL, seed=9)
    frame = random_frames(1, SMALL, 10)[0]
    cache = net.new_cache(START, RECENT)
    net.step(frame, cache, 0)
    block = net.blocks[0]
    raw, _ = block.raw_kv(frame[None])
    assert torch.equal(cache.layers[0].keys, raw)


def test_read_attends_to_the_frame_whose_tokens_match_the_query():
    net = CachedTransformer(SMALL, seed=11)
    frames = random_frames(20, SMALL, 12)
    _, cache = stepped(net, frames)
    for target in (3, 17):
        weights = net.read(frames[target, 2], cache, layer=0, temperature=8.0)  # a patch token of that frame
        assert weights.shape == (20, SMALL.tokens)
        assert abs(float(weights.sum()) - 1.0) < 1e-5
        assert int(weights.sum(1).argmax()) == target
    masked = net.read(frames[3, 2], cache, 0, frame_mask=torch.arange(20) != 3, temperature=8.0)
    assert float(masked[3].sum()) == 0.0 and int(masked.sum(1).argmax()) != 3
    assert float(net.read(frames[3, 2], cache, 0, frame_mask=torch.zeros(20, dtype=torch.bool)).sum()) == 0.0


def test_fused_rows_are_semantic_plus_lambda_spatial():
    memory = DualImplicitMemory(SMALL, SPATIAL, START, RECENT, lam=0.2, seed=13)
    out = memory.step(random_frames(1, SMALL, 14)[0], random_frames(1, SPATIAL, 15)[0], 0)
    fusion = memory.fusion
    assert out["fused"].shape == ((SMALL.grid // 2) ** 2, SMALL.dim)
    expected = fusion.semantic(out["semantic"][1:]) + 0.2 * fusion.spatial(out["spatial"][1:])
    torch.testing.assert_close(out["fused"], expected, atol=1e-6, rtol=0)
    assert (fusion.spatial(out["spatial"][1:])).abs().max() > 1e-3  # the spatial term is not zero


def test_reset_makes_outputs_independent_of_the_previous_episode():
    memory = DualImplicitMemory(SMALL, SPATIAL, START, RECENT, seed=16)
    fresh = DualImplicitMemory(SMALL, SPATIAL, START, RECENT, seed=16)
    a_sem, a_spa = random_frames(30, SMALL, 17), random_frames(30, SPATIAL, 18)
    b_sem, b_spa = random_frames(10, SMALL, 19), random_frames(10, SPATIAL, 20)
    for t in range(30):
        memory.step(a_sem[t], a_spa[t], t)
    memory.reset()
    assert memory.frames == 0
    for t in range(10):
        mine, theirs = memory.step(b_sem[t], b_spa[t], t), fresh.step(b_sem[t], b_spa[t], t)
        assert torch.equal(mine["fused"], theirs["fused"])


def test_caches_round_trip_through_safetensors_bit_exactly(tmp_path):
    net = CachedTransformer(SMALL, seed=21)
    frames = random_frames(61, SMALL, 22)
    _, cache = stepped(net, frames[:60], ids=[5 * n for n in range(60)])
    cache.save_safetensors(tmp_path / "semantic.safetensors")
    loaded = cache.load_safetensors(tmp_path / "semantic.safetensors")
    for mine, theirs in zip(cache.layers, loaded.layers):
        assert torch.equal(mine.keys, theirs.keys) and torch.equal(mine.values, theirs.values)
        assert mine.frame_ids.tolist() == theirs.frame_ids.tolist()
    assert torch.equal(net.step(frames[60], cache, 300), net.step(frames[60], loaded, 300))
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="corrupt cache file"):
        cache.load_safetensors(tmp_path / "bad.safetensors")
    arrays = cache.to_arrays()
    arrays["1.keys"] = arrays["1.keys"][:, :, :-1]
    with pytest.raises(ValueError, match="1.keys"):
        cache.from_arrays(arrays)
    arrays = cache.to_arrays()
    arrays["0.frame_ids"] = np.arange(57)
    with pytest.raises(ValueError, match="more than the cache keeps"):
        cache.from_arrays(arrays)


def test_a_failed_step_can_be_undone_exactly():
    memory = DualImplicitMemory(SMALL, SPATIAL, START, RECENT, seed=23)
    sem, spa = random_frames(60, SMALL, 24), random_frames(60, SPATIAL, 25)
    for t in range(57):
        memory.step(sem[t], spa[t], t)
    before = {k: v.copy() for k, v in memory.to_arrays().items()}
    snapshot = memory.snapshot()
    memory.step(sem[57], spa[57], 57)
    memory.restore(snapshot)
    after = memory.to_arrays()
    assert all(np.array_equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------------------------------- system
@pytest.fixture(scope="module")
def fed(one_day):
    memory = build("memory", {"name": "janus", "encoder": "gt_hash"})
    memory.set_floor_plan(one_day.episode.floor_plan())
    for obs in one_day.observations:
        memory.observe(obs)
    return memory


def answers(memory, near):
    structured = Query("go", near=near, constraints={"goals": [{"target": "receptacle"}], "ordered": False})
    out = []
    for query in (structured, Query("the table in the kitchen"), Query("a small cup")):
        out.append([(h.frame_id, h.object_id, round(h.score, 9)) for h in memory.recall(query).hits])
    return out


def test_the_system_keeps_the_first_8_and_last_48_frames_of_the_stream(fed, one_day):
    ids = [obs.frame_id for obs in one_day.observations]
    assert len(ids) > 100
    stats = fed.stats()
    assert stats.items == 56 and stats.frames_seen == len(ids)
    assert fed.memory.frame_ids() == ids[:8] + ids[-48:]
    assert [f.record.frame_id for f in fed.kept] == ids[:8] + ids[-48:]
    assert stats.bytes == fed.stats().bytes > fed.memory.nbytes()


def test_every_hit_names_a_kept_frame_and_evicted_frames_are_gone(fed, one_day):
    kept = set(fed.memory.frame_ids())
    near = one_day.observations[-1].pose
    for hits in answers(fed, near):
        assert hits and all(frame_id in kept for frame_id, _, _ in hits)
    # the diary knows only the grasps / releases of kept frames
    assert all(entry.frame_id in kept for entry in fed.diary.entries)
    events = [obs.frame_id for obs in one_day.observations if any(e.kind in ("grasp", "release") for e in obs.events)]
    assert len(fed.diary.entries) == sum(1 for f in events if f in kept) < len(events)
    for entity in fed.catalog():  # every entity was seen in a kept frame
        assert any(entity.entity_id in f.record.instance_ids for f in fed.kept)


def test_language_recall_attends_to_frames_that_show_the_named_thing(fed):
    labels = {}
    for frame in fed.kept:
        for label in frame.record.labels:
            labels.setdefault(label, set()).add(frame.record.frame_id)
    def unambiguous(label):  # no other kept frame names it in any form ("table" vs "coffee table")
        words = label.replace("_", " ")
        return all(words not in f.record.caption for f in fed.kept if f.record.frame_id not in labels[label])

    rare = sorted((len(frames), label) for label, frames in labels.items() if len(frames) <= 10 and unambiguous(label))
    assert len(rare) >= 3
    checked = 0
    for _, label in rare[:6]:
        hit = fed.recall(Query(label, k=1)).hits[0]
        assert hit.frame_id in labels[label], label
        assert hit.target_xyz is not None and hit.agent_pose is not None
        checked += 1
    assert checked >= 3


def test_language_recall_with_real_minilm(one_day):
    memory = build("memory", {"name": "janus", "encoder": "minilm"})
    stream = one_day.observations[-56:]
    for obs in stream:
        memory.observe(obs)
    shown = {}
    for frame in memory.kept:
        for label, attributes in zip(frame.record.labels, frame.record.attributes):
            shown.setdefault(label, set()).add(frame.record.frame_id)
    label = min(shown, key=lambda name: (len(shown[name]), name))
    hits = memory.recall(Query(f"where did you see the {label}?", k=3)).hits
    assert hits[0].frame_id in shown[label]
    assert hits[0].evidence["attention_mass"] > 1.0 / 56  # more than its share


def test_time_range_limits_the_attended_frames(fed):
    stamps = [f.record.stamp for f in fed.kept]
    window = (stamps[0], stamps[7])  # the initial frames only
    hits = fed.recall(Query("table", k=20, time_range=window)).hits
    assert hits and all(window[0] <= h.stamp <= window[1] for h in hits)
    assert len(hits) <= 8
    assert fed.recall(Query("table", time_range=(stamps[-1] + 10, stamps[-1] + 20))).hits == []


def test_save_load_round_trips_bit_exactly_and_continues_identically(fed, one_day, tmp_path):
    fed.save(tmp_path / "ck")
    other = build("memory", {"name": "janus", "encoder": "gt_hash"})
    other.load(tmp_path / "ck")
    mine, theirs = fed.memory.to_arrays(), other.memory.to_arrays()
    assert mine.keys() == theirs.keys() and all(np.array_equal(mine[k], theirs[k]) and mine[k].dtype == theirs[k].dtype for k in mine)
    near = one_day.observations[-1].pose
    assert answers(other, near) == answers(fed, near)
    assert other.stats() == fed.stats()
    assert [e.to_dict() for e in other.diary.entries] == [e.to_dict() for e in fed.diary.entries]
    # a loaded memory goes on exactly as the one that never stopped
    stream = one_day.observations[:70]
    original = build("memory", {"name": "janus", "encoder": "gt_hash"})
    for obs in stream[:60]:
        original.observe(obs)
    original.save(tmp_path / "short")
    resumed = build("memory", {"name": "janus", "encoder": "gt_hash"})
    resumed.load(tmp_path / "short")
    for obs in stream[60:]:
        original.observe(obs)
        resumed.observe(obs)
        assert torch.equal(original.last_output["fused"], resumed.last_output["fused"])
    assert original.memory.frame_ids() == resumed.memory.frame_ids()
    resumed.observe(stream[65])  # the gate came back too: a re-sent frame changes nothing
    assert resumed.stats() == original.stats()


def test_a_corrupt_or_foreign_checkpoint_is_refused_and_changes_nothing(fed, one_day, tmp_path):
    fed.save(tmp_path / "ck")
    other = build("memory", {"name": "janus", "encoder": "gt_hash"})
    for obs in one_day.observations[:20]:
        other.observe(obs)
    before, near = other.stats(), one_day.observations[19].pose
    answered = answers(other, near)
    folder = next((tmp_path / "ck").glob("v*"))
    data = bytearray((folder / "arrays.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "arrays.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        other.load(tmp_path / "ck")
    fed.save(tmp_path / "ck2")
    seeded = build("memory", {"name": "janus", "encoder": "gt_hash", "seed": 1})
    with pytest.raises(ValueError, match="another configuration"):
        seeded.load(tmp_path / "ck2")
    assert other.stats() == before and answers(other, near) == answered


def test_observe_is_all_or_nothing(one_day, monkeypatch):
    memory = build("memory", {"name": "janus", "encoder": "gt_hash"})
    for obs in one_day.observations[:60]:
        memory.observe(obs)
    near = one_day.observations[59].pose
    before, answered = memory.stats(), answers(memory, near)
    arrays = {k: v.copy() for k, v in memory.memory.to_arrays().items()}
    spatial = memory.memory.nets["spatial"]

    def broken(*args, **kwargs):
        raise RuntimeError("spatial encoder failed")

    monkeypatch.setattr(spatial, "step", broken)  # after the semantic cache took the frame
    with pytest.raises(RuntimeError):
        memory.observe(one_day.observations[60])
    monkeypatch.undo()
    assert memory.stats() == before and answers(memory, near) == answered
    after = memory.memory.to_arrays()
    assert all(np.array_equal(arrays[k], after[k]) for k in arrays)
    memory.observe(one_day.observations[60])  # and the frame can still come
    assert memory.stats().frames_seen == before.frames_seen + 1


def test_a_frame_seen_twice_changes_nothing_and_bad_input_is_refused(one_day):
    memory = build("memory", {"name": "janus", "encoder": "gt_hash"})
    for obs in one_day.observations[:10]:
        memory.observe(obs)
    before = memory.memory.to_arrays()
    memory.observe(one_day.observations[9])
    assert memory.stats().frames_seen == 10
    assert all(np.array_equal(before[k], v) for k, v in memory.memory.to_arrays().items())
    bad = copy.copy(one_day.observations[10])
    bad.depth = bad.depth.astype(np.float64)
    with pytest.raises(ValueError, match="Observation.depth"):
        memory.observe(bad)
    with pytest.raises(ValueError, match="Query.k"):
        memory.recall(_bad_k())
    with pytest.raises(ValueError, match="read_layer"):
        build("memory", {"name": "janus", "encoder": "gt_hash", "read_layer": 2})
    with pytest.raises(ValueError, match="backbone"):
        build("memory", {"name": "janus", "encoder": "gt_hash", "spatial_backbone": "vggt"})


def _bad_k():
    query = Query("x")
    query.k = 0
    return query


def test_reset_forgets_everything_but_the_floor_plan(one_day):
    memory = build("memory", {"name": "janus", "encoder": "gt_hash"})
    fresh = build("memory", {"name": "janus", "encoder": "gt_hash"})
    plan = one_day.episode.floor_plan()
    memory.set_floor_plan(plan)
    fresh.set_floor_plan(plan)
    for obs in one_day.observations[:80]:
        memory.observe(obs)
    memory.reset()
    assert memory.stats().items == 0 and memory.stats().frames_seen == 0 and memory.memory.frames == 0
    assert memory.recall(Query("table")).hits == []
    for obs in one_day.observations[100:130]:
        memory.observe(obs)
        fresh.observe(obs)
    near = one_day.observations[129].pose
    assert answers(memory, near) == answers(fresh, near)
    assert memory.diary.floor_plan is not None and [s.room for s in memory.diary.stays] == [s.room for s in fresh.diary.stays]


def test_a_hugging_face_backbone_plugs_in_offline(one_day, tmp_path):
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=32, patch_size=8)
    ViTModel(config).save_pretrained(tmp_path / "tiny_vit")  # a random model on disk: nothing downloaded
    memory = build("memory", {"name": "janus", "encoder": "gt_hash", "semantic_backbone": f"hf:{tmp_path / 'tiny_vit'}"})
    for obs in one_day.observations[:5]:
        memory.observe(obs)
    assert memory.stats().items == 5 and memory.memory.caches["semantic"].frames == 5
    assert memory.last_output["fused"].shape == (4, memory.config.semantic_dim)


@pytest.mark.gpu
def test_a_hugging_face_backbone_runs_on_the_gpu(one_day, tmp_path):
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=64, patch_size=8)
    ViTModel(config).save_pretrained(tmp_path / "vit")
    options = {"name": "janus", "encoder": "gt_hash", "device": "cuda"}
    memory = build("memory", {**options, "semantic_backbone": f"hf:{tmp_path / 'vit'}", "spatial_backbone": f"hf:{tmp_path / 'vit'}"})
    cpu = build("memory", {**options, "device": "cpu", "semantic_backbone": f"hf:{tmp_path / 'vit'}", "spatial_backbone": f"hf:{tmp_path / 'vit'}"})
    for obs in one_day.observations[:60]:
        memory.observe(obs)
        cpu.observe(obs)
    assert memory.memory.frames == 56
    torch.testing.assert_close(memory.last_output["fused"], cpu.last_output["fused"], atol=1e-3, rtol=1e-3)


def test_the_benchmark_reports_flat_bytes_against_a_growing_full_history(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_janus.py"
    spec = importlib.util.spec_from_file_location("bench_janus", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--steps", "60", "120", "--full-max", "120", "--window", "10"]) == 0
    printed = capsys.readouterr().out
    assert "(flat)" in printed and "x1.00" in printed
    rows = [line.split() for line in printed.splitlines() if line.strip().startswith(("60 ", "120 "))]
    assert float(rows[1][7]) == pytest.approx(120 / 56, abs=0.06)  # full / janus bytes at 120 steps (printed .1f)
