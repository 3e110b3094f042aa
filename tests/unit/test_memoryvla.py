"""MemoryVLA: the PCMB bank (capacity, consolidation, bytes), the modules' formulas, the system's
protocol (all or nothing, checkpoints, both tracks) and the training script."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embodied_mem.memory.memoryvla.bank import MemoryBank, adjacent_similarity, spaced
from embodied_mem.memory.memoryvla.modules import CrossBlock, GateFusion, StreamMemory, TimestepEmbedder, timestep_encoding
from embodied_mem.memory.memoryvla.system import KeptFrame, MemoryVLA, MemoryVLAConfig, load_weights
from embodied_mem.registry import build
from embodied_mem.types import Query

POSE = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])


def filled(bank: MemoryBank, feats: np.ndarray, start: int = 0) -> MemoryBank:
    for n, feat in enumerate(feats):
        bank.append(start + n, feat, start + n, float(start + n), POSE)
    return bank


# ----------------------------------------------------------------------------------------
# Formulas
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [8, 11, 32])
def test_timestep_encoding_is_the_cos_sin_sinusoid(dim):
    t = np.array([0.0, 1.0, 7.5, 1234.0, 9999.0])
    half = dim // 2
    expected = np.zeros((len(t), dim))
    for row, value in enumerate(t):
        for i in range(half):
            frequency = 10000.0 ** (-i / half)
            expected[row, i] = math.cos(value * frequency)
            expected[row, half + i] = math.sin(value * frequency)
    got = timestep_encoding(torch.tensor(t), dim).numpy()
    assert got.shape == (len(t), dim)
    np.testing.assert_allclose(got, expected, atol=2e-3)  # float32 arguments up to 1e4 rad
    np.testing.assert_allclose(got[:3], expected[:3], atol=1e-6)
    if dim % 2:
        assert np.all(got[:, -1] == 0.0)


def test_timestep_embedder_is_sinusoid_then_linear_silu_linear():
    torch.manual_seed(0)
    embedder = TimestepEmbedder(16, 4)
    t = torch.tensor([3.0, 40.0])
    first, second = embedder.mlp[0], embedder.mlp[2]
    h = timestep_encoding(t, 4) @ first.weight.T + first.bias
    expected = (h * torch.sigmoid(h)) @ second.weight.T + second.bias
    torch.testing.assert_close(embedder(t), expected)


def test_gate_output_equals_the_formula_at_init():
    torch.manual_seed(1)
    gate = GateFusion(24)
    weight, bias = gate.proj.weight.detach().numpy().astype(np.float64), gate.proj.bias.detach().numpy().astype(np.float64)
    assert 5e-4 < weight.std() < 2e-3 and abs(weight.mean()) < 1e-4  # N(0, 1e-3)
    x, r = np.random.default_rng(0).standard_normal((2, 5, 24))
    g = 1.0 / (1.0 + np.exp(-(np.concatenate([x, r], axis=-1) @ weight.T + bias)))
    expected = g * x + (1.0 - g) * r
    got = gate(torch.tensor(x, dtype=torch.float32), torch.tensor(r, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got, 0.5 * (x + r), atol=0.05)  # g ~ 0.5 at init
    low, high = np.minimum(x, r), np.maximum(x, r)
    assert np.all(got >= low - 1e-6) and np.all(got <= high + 1e-6)  # between x and r
    with torch.no_grad():
        gate.proj.weight.zero_()
        gate.proj.bias.zero_()
    zero = gate(torch.tensor(x, dtype=torch.float32), torch.tensor(r, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(zero, 0.5 * (x + r), atol=1e-6)


def test_cross_block_is_single_head_softmax_attention_with_post_layernorm():
    torch.manual_seed(2)
    block = CrossBlock(8)
    q, k, v = torch.randn(3, 8), torch.randn(5, 8), torch.randn(5, 8)
    out, weights = block(q, k, v)
    Q, K, V = block.q_proj(q), block.k_proj(k), block.v_proj(v)
    attention = torch.softmax(Q @ K.T / math.sqrt(8), dim=-1)
    x = torch.nn.functional.layer_norm(q + attention @ V, (8,), block.attn_norm.weight, block.attn_norm.bias)
    expected = torch.nn.functional.layer_norm(x + block.ffn(x), (8,), block.ffn_norm.weight, block.ffn_norm.bias)
    torch.testing.assert_close(weights, attention)
    torch.testing.assert_close(out, expected)


def stream(dim=16, **options) -> StreamMemory:
    torch.manual_seed(3)
    return StreamMemory(dim, **options).eval()


def test_retrieval_keys_carry_timesteps_values_do_not():
    s = stream()
    x = torch.randn(4, 16)
    memory, times = torch.randn(6, 4, 16), torch.tensor([0.0, 2.0, 5.0, 9.0, 12.0, 20.0])
    with torch.no_grad():
        r, _ = s.retrieve(x, memory, times)
        order = torch.tensor([3, 0, 5, 1, 4, 2])
        permuted, _ = s.retrieve(x, memory[order], times[order])  # entries moved with their stamps
        shifted, _ = s.retrieve(x, memory, times + 7.0)
        unstamped, _ = stream(use_timestep_pe=False).retrieve(x, memory, times)
        # By hand: keys = M + PE (repeated per token), values = M.
        flat = memory.reshape(-1, 16)
        keys = flat + s.timestep(times).repeat_interleave(4, dim=0)
        query = x
        for block in s.blocks:
            query, _ = block(query, keys, flat)
    torch.testing.assert_close(r, permuted, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r, query)
    assert (r - shifted).abs().max() > 1e-3  # the timesteps matter
    assert (r - unstamped).abs().max() > 1e-3


def test_empty_bank_retrieves_the_working_memory_itself():
    s = stream()
    x = torch.randn(3, 16)
    with torch.no_grad():
        r, weights = s.retrieve(x, torch.zeros(0, 3, 16), torch.zeros(0))
        fused = s(x, torch.zeros(0, 3, 16), torch.zeros(0))
    assert weights is None and torch.equal(r, x)
    torch.testing.assert_close(fused, x)  # g x + (1 - g) x = x


def test_add_fusion_is_the_mean():
    s = stream(fusion="add")
    x, r = torch.randn(2, 16), torch.randn(2, 16)
    torch.testing.assert_close(s.fuse(x, r), 0.5 * (x + r))
    with pytest.raises(ValueError, match="fusion"):
        StreamMemory(16, fusion="concat")


def test_gradients_reach_retrieval_gate_and_timestep_embedder():
    s = stream().train()
    x = torch.randn(2, 16, requires_grad=True)
    s(x, torch.randn(5, 2, 16), torch.arange(5.0)).square().sum().backward()
    for name, parameter in s.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------------------
# The bank
# ----------------------------------------------------------------------------------------
def per_token_cosine_mean(a: np.ndarray, b: np.ndarray) -> float:
    values = [float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))) for u, v in zip(a, b)]
    return sum(values) / len(values)


def test_bank_bytes_are_flat_over_ten_thousand_steps():
    rng = np.random.default_rng(0)
    bank = MemoryBank(16, 4, 32, frames_per_entry=8)
    sizes = {}
    for step in range(10_000):
        bank.append(step, rng.standard_normal((4, 32)).astype(np.float32), step, float(step), POSE)
        if step + 1 in (100, 10_000):
            sizes[step + 1] = bank.nbytes()
        assert len(bank) == min(step + 1, 16)
    assert sizes[100] == sizes[10_000]
    assert sizes[100] == 17 * (4 * 32 * 4 + 8 + 8 * 8 + 8 * 8 + 8 * 56 + 8)  # capacity + 1 slots, nothing else
    assert bank.member_counts[:16].max() <= 8 and bank.member_counts[:16].sum() > 16
    assert np.all(np.diff(bank.times[:16]) >= 0)


def test_consolidation_merges_the_most_similar_adjacent_pair_only():
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((17, 3, 8)).astype(np.float32)
    feats[9] = feats[8] + 0.01 * rng.standard_normal((3, 8)).astype(np.float32)  # 8 and 9 alike
    bank = filled(MemoryBank(16, 3, 8), feats[:16])
    before_feats, before_times = bank.feats[:16].copy(), bank.times[:16].copy()
    sims = [per_token_cosine_mean(a, b) for a, b in zip(np.concatenate([before_feats, feats[16:]])[:-1], np.concatenate([before_feats, feats[16:]])[1:])]
    k = bank.append(16, feats[16], 16, 16.0, POSE)
    assert k == int(np.argmax(sims)) == 8
    assert len(bank) == 16
    np.testing.assert_array_equal(bank.feats[8], np.float32(0.5) * (before_feats[8] + before_feats[9]))
    np.testing.assert_array_equal(bank.feats[:8], before_feats[:8])  # bit-identical
    np.testing.assert_array_equal(bank.feats[9:15], before_feats[10:16])
    np.testing.assert_array_equal(bank.feats[15], feats[16])
    assert bank.times[8] == before_times[8]  # vla: the merged entry keeps t_k
    assert list(bank.times[:16]) == [t for n, t in enumerate(list(before_times) + [16.0]) if n != 9]
    assert [m[0] for m in bank.members(8)] == [8, 9]  # the union of both entries' frames
    assert [m[1] for m in bank.members(8)] == [8.0, 9.0]
    assert bank.merges == 1


def test_similarity_is_per_token_cosine_averaged_not_of_flattened_entries():
    # Token 0 is huge and dominates a flattened cosine; the per-token mean weighs tokens equally.
    base = np.zeros((4, 2, 3), np.float32)
    base[:, 0] = [[100, 0, 0], [100, 0, 0], [-100, 0, 0], [-90, 43.589, 0]]  # pair 2: cos 0.9
    base[:, 1] = [[0, 1, 0], [0, -1, 0], [0, 1, 0], [0, 1, 0]]  # pair 0: cos -1; pair 2: cos 1
    sims = adjacent_similarity(base)
    expected = [per_token_cosine_mean(base[i].astype(np.float64), base[i + 1].astype(np.float64)) for i in range(3)]
    np.testing.assert_allclose(sims, expected, atol=1e-9)
    flat = [float(np.dot(base[i].ravel(), base[i + 1].ravel()) / np.linalg.norm(base[i]) / np.linalg.norm(base[i + 1])) for i in range(3)]
    assert int(np.argmax(sims)) == 2 and int(np.argmax(flat)) == 0
    bank = filled(MemoryBank(3, 2, 3), base[:3])
    assert bank.append(3, base[3], 3, 3.0, POSE) == 2


def test_ties_merge_the_lowest_pair():
    same = np.ones((5, 1, 4), np.float32)
    bank = filled(MemoryBank(4, 1, 4), same[:4])
    assert bank.append(4, same[4], 4, 4.0, POSE) == 0


def test_every_step_once_full_removes_exactly_one_adjacent_boundary():
    rng = np.random.default_rng(2)
    bank = MemoryBank(6, 2, 5, frames_per_entry=3)
    for step in range(200):
        times_before = list(bank.times[: len(bank)])
        members_before = [[m[0] for m in bank.members(e)] for e in range(len(bank))]
        merged = bank.append(step, rng.standard_normal((2, 5)).astype(np.float32), step, float(step), POSE)
        times = list(bank.times[: len(bank)])
        assert len(bank) == min(step + 1, 6)
        if step < 6:
            assert merged is None and times == times_before + [float(step)]
            continue
        extended = times_before + [float(step)]
        assert times == extended[: merged + 1] + extended[merged + 2 :]  # entry k+1 gone, order kept
        assert times == sorted(times)
        union = (members_before + [[step]])[merged] + (members_before + [[step]])[merged + 1]
        kept = [m[0] for m in bank.members(merged)]
        assert set(kept) <= set(union) and kept == sorted(kept) and len(kept) == min(len(union), 3)
        assert kept[0] == union[0] and kept[-1] == union[-1]  # evenly spaced: both ends kept


def test_spaced_keeps_evenly_spaced_members():
    assert spaced(3, 8).tolist() == [0, 1, 2]
    assert spaced(9, 3).tolist() == [0, 4, 8]
    assert spaced(16, 8).tolist() == [0, 2, 4, 6, 9, 11, 13, 15]


def test_fifo_keeps_exactly_the_last_capacity_timesteps():
    rng = np.random.default_rng(3)
    bank = MemoryBank(5, 1, 4, consolidate="fifo")
    for step in range(23):
        bank.append(step, rng.standard_normal((1, 4)).astype(np.float32), step, float(step), POSE)
    assert list(bank.times[:5]) == [18.0, 19.0, 20.0, 21.0, 22.0]
    assert [bank.members(e)[0][0] for e in range(5)] == [18, 19, 20, 21, 22]


@pytest.mark.parametrize(
    "feat, match",
    [
        (np.zeros((3, 8), np.float32), "shape"),
        (np.zeros((2, 9), np.float32), "shape"),
        (np.zeros(16, np.float32), "shape"),
        (np.full((2, 8), np.nan, np.float32), "NaN"),
        (np.full((2, 8), np.inf, np.float32), "NaN or inf"),
    ],
)
def test_bad_tokens_are_refused_and_change_nothing(feat, match):
    bank = filled(MemoryBank(4, 2, 8), np.random.default_rng(4).standard_normal((6, 2, 8)).astype(np.float32))
    snapshot = bank.snapshot()
    with pytest.raises(ValueError, match=match):
        bank.append(10, feat, 10, 10.0, POSE)
    with pytest.raises(ValueError, match="older"):
        bank.append(1, np.zeros((2, 8), np.float32), 11, 11.0, POSE)
    with pytest.raises(ValueError, match="not finite"):
        bank.append(math.nan, np.zeros((2, 8), np.float32), 11, 11.0, POSE)
    with pytest.raises(ValueError, match="pose"):
        bank.append(12, np.zeros((2, 8), np.float32), 11, 11.0, POSE[:3])
    for name, array in snapshot[0].items():
        np.testing.assert_array_equal(bank._arrays()[name], array)
    assert (bank.size, bank.merges) == snapshot[1:]


def test_bank_state_round_trips_and_refuses_bad_arrays():
    bank = filled(MemoryBank(4, 2, 8), np.random.default_rng(5).standard_normal((9, 2, 8)).astype(np.float32))
    state, arrays = bank.to_state("x_")
    again = bank.from_state("x_", state, arrays)
    for name, array in bank._arrays().items():
        np.testing.assert_array_equal(again._arrays()[name], array)
    bad = dict(arrays, x_feats=np.full_like(arrays["x_feats"], np.nan))
    with pytest.raises(ValueError, match="NaN"):
        bank.from_state("x_", state, bad)
    with pytest.raises(ValueError, match="has shape"):
        bank.from_state("x_", state, dict(arrays, x_times=np.zeros(3)))
    with pytest.raises(ValueError, match="no members"):
        bank.from_state("x_", state, dict(arrays, x_member_counts=np.zeros_like(arrays["x_member_counts"])))
    with pytest.raises(ValueError, match="back in time"):
        bank.from_state("x_", state, dict(arrays, x_times=arrays["x_times"][::-1].copy()))
    empty = MemoryBank(4, 2, 8)
    assert len(empty.from_state("x_", *empty.to_state("x_"))) == 0
    with pytest.raises(ValueError, match="size"):
        bank.from_state("x_", {"size": 9, "merges": 0}, arrays)


# ----------------------------------------------------------------------------------------
# The system
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fed(one_day):
    memory = build("memory", {"name": "memoryvla", "encoder": "gt_hash", "weights": None})
    memory.set_floor_plan(one_day.episode.floor_plan())
    for obs in one_day.observations:
        memory.observe(obs)
    return memory


def answers(memory, near):
    query = Query("go", near=near, constraints={"goals": [{"target": "receptacle", "category": "bed"}], "ordered": False})
    return [[(h.frame_id, h.object_id, round(h.score, 9)) for h in memory.recall(q).hits] for q in (query, Query("a red mug"))]


def test_banks_are_full_and_name_only_frames_it_observed(fed, one_day):
    observed = {o.frame_id for o in one_day.observations}
    assert len(fed.per_bank) == len(fed.cog_bank) == 16
    assert fed.per_bank.feats.shape == (17, 16, 128) and fed.cog_bank.feats.shape == (17, 1, 128)
    assert set(fed.frames) == fed.per_bank.frame_ids() | fed.cog_bank.frame_ids() <= observed
    assert len(fed.frames) <= 2 * 16 * 8 and len(fed.frames) < len(observed)
    stats = fed.stats()
    assert stats.items == 32 and stats.frames_seen == len(one_day.observations)
    assert fed.per_bank.times[0] == 0.0 and fed.cog_bank.times[15] <= len(one_day.observations) - 1  # step counter
    last = one_day.observations[-1].frame_id
    assert fed.cog_bank.members(15)[-1][0] == fed.per_bank.members(15)[-1][0] == last  # the newest frame is named


def test_catalog_names_only_what_the_kept_frames_or_the_diary_show(fed, one_day):
    small = build("memory", {"name": "memoryvla", "encoder": "gt_hash", "weights": None, "capacity": 3, "frames_per_entry": 1})
    for obs in one_day.observations[::2]:
        small.observe(obs)
    for memory in (fed, small):
        kept_ids = {int(i) for f in memory.frames.values() for i in f.track_ids}
        released = {e.object_id for e in memory.diary.entries if e.kind == "place"}
        catalog = memory.catalog()
        assert catalog and {e.entity_id for e in catalog} <= kept_ids | released
    confirmed = {t.track_id for t in small.tracker.confirmed()}
    assert len(small.frames) <= 6 and len(small.catalog()) < len(confirmed)  # a small bank forgets: that is the system
    for entity in fed.catalog():
        sightings = [(f, r) for f in fed.frames.values() for r, i in enumerate(f.track_ids) if i == entity.entity_id]
        if sightings and fed.tracker.tracks[entity.entity_id].moved_at is None:
            assert entity.category in {f.labels[r] for f, r in sightings}  # label from kept frames


def test_the_diary_keeps_every_grasp_and_release(fed, one_day):
    events = [e.kind for o in one_day.observations for e in o.events if e.kind in ("grasp", "release")]
    assert [e.kind for e in fed.diary.entries] == ["pick" if k == "grasp" else "place" for k in events]


def test_oracle_hits_name_observed_frames(fed, one_day):
    observed = {o.frame_id for o in one_day.observations}
    near = one_day.observations[-1].pose
    total = 0
    for task in one_day.tasks:
        hits = fed.recall(Query(task.instruction, near=near, constraints=task.constraints)).hits
        total += len(hits)
        assert all(h.frame_id in observed and h.agent_pose is not None for h in hits)
    assert total > 0


def test_language_recall_returns_the_frames_of_the_highest_attention_entries(fed):
    query = Query("a bed in the bedroom", k=20)
    attention = fed.entry_attention(fed.query_token(query.text))
    assert attention.shape == (16,) and abs(attention.sum() - 1.0) < 1e-6
    hits = fed.recall(query).hits
    order = list(np.argsort(-attention, kind="stable"))
    entries = [h.evidence["entry"] for h in hits]
    assert entries == sorted(entries, key=order.index)  # entry by entry, best first
    assert entries[0] == order[0]
    for hit in hits:
        assert hit.frame_id in [m[0] for m in fed.cog_bank.members(hit.evidence["entry"])]
    assert [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)


def test_readout_attention_is_the_softmax_of_fused_cosines(fed):
    token = fed.query_token("a sofa")
    feats, times = fed.cog_bank.entries()
    with torch.no_grad():
        x = torch.from_numpy(token)
        r, _ = fed.modules.cog.retrieve(x, torch.from_numpy(feats), torch.from_numpy(times))
        fused = fed.modules.cog.gate(x, r).numpy()[0].astype(np.float64)
    m = feats[:, 0, :].astype(np.float64)
    cos = m @ fused / np.linalg.norm(m, axis=1) / np.linalg.norm(fused)
    expected = np.exp(cos / 0.1) / np.exp(cos / 0.1).sum()
    np.testing.assert_allclose(fed.entry_attention(token), expected, atol=1e-5)


def test_observe_is_idempotent_and_all_or_nothing(one_day, monkeypatch):
    memory = build("memory", {"name": "memoryvla", "encoder": "gt_hash", "weights": None})
    for obs in one_day.observations[:40]:
        memory.observe(obs)
    near = one_day.observations[39].pose
    before_stats, before = memory.stats(), answers(memory, near)
    memory.observe(one_day.observations[39])  # a re-sent frame
    assert memory.stats() == before_stats
    original = MemoryBank.append
    calls = {"n": 0}

    def failing(self, *args, **kwargs):  # the second bank (cognitive) fails after the first wrote
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MemoryBank, "append", failing)
    with pytest.raises(RuntimeError):
        memory.observe(one_day.observations[40])
    monkeypatch.setattr(MemoryBank, "append", original)
    assert memory.stats() == before_stats and answers(memory, near) == before
    memory.observe(one_day.observations[40])
    assert memory.stats().frames_seen == before_stats.frames_seen + 1


def test_checkpoint_round_trip_and_corrupt_checkpoint(fed, one_day, tmp_path):
    near = one_day.observations[-1].pose
    fed.save(tmp_path / "ckpt")
    again = build("memory", {"name": "memoryvla", "encoder": "gt_hash", "weights": None})
    again.load(tmp_path / "ckpt")
    assert again.stats() == fed.stats() and answers(again, near) == answers(fed, near)
    np.testing.assert_array_equal(again.cog_bank.feats, fed.cog_bank.feats)
    other = build("memory", {"name": "memoryvla", "encoder": "gt_hash", "weights": None, "capacity": 8})
    with pytest.raises(ValueError, match="configuration"):
        other.load(tmp_path / "ckpt")
    version = next((tmp_path / "ckpt").glob("v*"))
    (version / "arrays.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        again.load(tmp_path / "ckpt")
    assert answers(again, near) == answers(fed, near)


def test_weights_file_round_trips_and_corrupt_weights_are_refused(tmp_path):
    from safetensors.torch import save_file

    config = MemoryVLAConfig(encoder="gt_hash", weights=None, seed=7)
    memory = MemoryVLA(config)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in memory.modules.state_dict().items()}, str(path))
    loaded = MemoryVLA(MemoryVLAConfig(encoder="gt_hash", weights=str(path), seed=0))
    for name, tensor in memory.modules.state_dict().items():
        torch.testing.assert_close(loaded.modules.state_dict()[name], tensor)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt memoryvla weights"):
        MemoryVLA(MemoryVLAConfig(encoder="gt_hash", weights=str(path)))
    with pytest.raises(ValueError, match="not found"):
        MemoryVLA(MemoryVLAConfig(encoder="gt_hash", weights=str(tmp_path / "missing.safetensors")))
    tensors = {k: v.contiguous() for k, v in memory.modules.state_dict().items()}
    save_file(dict(tensors, **{"cog.gate.proj.bias": torch.full_like(tensors["cog.gate.proj.bias"], math.nan)}), str(path))
    with pytest.raises(ValueError, match="NaN"):
        load_weights(memory.modules, str(path))
    save_file({k: v for k, v in tensors.items() if not k.startswith("per.")}, str(path))
    with pytest.raises(ValueError, match="missing"):
        load_weights(memory.modules, str(path))


def test_bad_configs_are_refused():
    for options, match in (({"consolidate": "lru"}, "consolidate"), ({"fusion": "mlp"}, "fusion"), ({"capacity": 1}, "capacity"), ({"temperature": 0.0}, "temperature")):
        with pytest.raises(ValueError, match=match):
            MemoryVLA(MemoryVLAConfig(encoder="gt_hash", weights=None, **options))


def test_update_fused_stores_the_fused_tokens(one_day):
    memory = MemoryVLA(MemoryVLAConfig(encoder="gt_hash", weights=None, update_fused=True))
    for obs in one_day.observations[:3]:
        memory.observe(obs)
    np.testing.assert_allclose(memory.cog_bank.feats[2], memory.fused["cog"], atol=1e-6)
    raw = MemoryVLA(MemoryVLAConfig(encoder="gt_hash", weights=None))
    for obs in one_day.observations[:3]:
        raw.observe(obs)
    assert not np.allclose(raw.cog_bank.feats[2], raw.fused["cog"], atol=1e-4)  # raw tokens by default


def test_kept_frame_bytes_count_its_detections():
    frame = KeptFrame(1, 0.0, 0, None, None, *(np.zeros(n, t) for n, t in ((2, np.int32), (2, np.int32))), np.zeros((2, 3), np.float32), np.zeros((2, 6), np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32), np.zeros(2, np.int32), ["mug", "cup"], [{}, {}])
    assert frame.nbytes() == 8 + 8 + 24 + 48 + 8 + 8 + 8 + 96 + 6


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------
def test_training_lowers_the_loss_and_the_file_round_trips(one_day, tmp_path):
    from safetensors.torch import load_file

    from embodied_mem.encoders import build_encoder

    from embodied_mem.memory.memoryvla import train

    out = tmp_path / "w.safetensors"
    args, config = train.parse(["--out", str(out), "--steps", "40", "--banks", "2", "--lr", "3e-3", "--encoder", "gt_hash", "--quiet"])
    encoder = build_encoder("gt_hash")
    history = train.history_from(one_day.observations, one_day.episode.floor_plan(), encoder, config)
    report = train.train(args, config, histories=([history], []))
    losses = report["losses"]
    assert len(losses) == 40 and np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    tensors = load_file(str(out))
    memory = MemoryVLA(MemoryVLAConfig(encoder="gt_hash", weights=str(out)))
    for name, tensor in memory.modules.state_dict().items():
        torch.testing.assert_close(tensors[name], tensor)
    untrained = MemoryVLA(MemoryVLAConfig(encoder="gt_hash", weights=None))
    assert torch.equal(tensors["per.gate.proj.weight"], untrained.modules.state_dict()["per.gate.proj.weight"])  # not trained
    assert not torch.equal(tensors["cog.gate.proj.weight"], untrained.modules.state_dict()["cog.gate.proj.weight"])


def test_training_help_explains_itself(capsys):
    from embodied_mem.memory.memoryvla import train

    with pytest.raises(SystemExit):
        train.parse(["--help"])
    text = capsys.readouterr().out
    assert "contrastive" in text and "--steps" in text and "safetensors" in text


def test_shipped_weights_are_small_load_by_name_and_say_how_they_were_made():
    import json

    from safetensors import safe_open

    from embodied_mem.memory.memoryvla.system import resolve_weights

    assert MemoryVLAConfig().weights is None  # the default is the untrained mechanism
    path = resolve_weights("weights.safetensors")
    assert path.is_file() and path.stat().st_size < 5_000_000
    with safe_open(str(path), "pt") as handle:
        made = json.loads(handle.metadata()["memoryvla"])
    assert made["encoder"] == "minilm" and made["last_loss"] < made["first_loss"]
    assert min(made["train_seeds"]) >= 1000  # disjoint from the evaluation seeds
    memory = MemoryVLA(MemoryVLAConfig(encoder="gt_hash", weights="weights.safetensors"))
    assert memory.weights_sha256 is not None
    assert not torch.equal(memory.modules.cog.gate.proj.weight, MemoryVLA(MemoryVLAConfig(encoder="gt_hash", weights=None)).modules.cog.gate.proj.weight)


def test_a_configured_vlm_replaces_both_encoders(one_day, monkeypatch):
    import embodied_mem.memory.memoryvla.vlm as vlm

    class Stub:  # a VLM's interface: 8x8 patch features of 48 channels and a 96-wide hidden state
        vision_dim, text_dim = 48, 96

        def __init__(self, name):
            self.calls = []

        def encode(self, rgb, semantics):
            self.calls.append(semantics)
            seed = int(rgb.sum()) % 1000
            rng = np.random.default_rng(seed)
            return rng.standard_normal((64, 48)).astype(np.float32), rng.standard_normal(96).astype(np.float32)

    monkeypatch.setattr(vlm, "HFVisionLanguage", Stub)
    memory = MemoryVLA(MemoryVLAConfig(encoder="gt_hash", weights=None, vlm="some/local-model"))
    for obs in one_day.observations[:20]:
        memory.observe(obs)
    assert memory.modules.image.__class__.__name__ == "PatchCompressor"
    assert memory.modules.cognitive.proj.in_features == 96
    assert memory.per_bank.entries()[0].shape == (16, 16, 128) and len(memory.cog_bank) == 16
    assert memory.vlm.calls and all(isinstance(c, str) for c in memory.vlm.calls)
    assert memory.recall(Query("a bed")).hits


def test_bank_refuses_impossible_shapes_and_accepts_the_smallest_valid_one():
    assert len(filled(MemoryBank(2, 1, 1, frames_per_entry=1), np.ones((5, 1, 1), np.float32))) == 2
    for args, match in (((1, 1, 4), "capacity"), ((4, 0, 4), "positive"), ((4, 1, 0), "positive")):
        with pytest.raises(ValueError, match=match):
            MemoryBank(*args)
    with pytest.raises(ValueError, match="positive"):
        MemoryBank(4, 1, 4, frames_per_entry=0)
    with pytest.raises(ValueError, match="consolidate"):
        MemoryBank(4, 1, 4, consolidate="lru")


def test_timesteps_may_repeat_but_never_go_back_and_members_keep_their_poses():
    bank = MemoryBank(8, 1, 2)
    for step in range(4):
        bank.append(step, np.full((1, 2), step + 1.0, np.float32), step, 10.0 * step, np.array([step, 0, 0, 0, 0, 0, 1.0]))
    with pytest.raises(ValueError, match="older"):
        bank.append(2.5, np.ones((1, 2), np.float32), 9, 30.0, POSE)
    bank.append(3, np.ones((1, 2), np.float32), 4, 40.0, np.array([4, 0, 0, 0, 0, 0, 1.0]))  # the same step again
    assert 0 in bank.frame_ids() and len(bank) == 5
    bank.merge(1)
    assert [(m[0], m[1], m[2][0]) for m in bank.members(1)] == [(1, 10.0, 1.0), (2, 20.0, 2.0)]
    assert [m[2][0] for e in range(len(bank)) for m in bank.members(e)] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="cannot merge"):
        bank.merge(3)
    fifo = filled(MemoryBank(2, 1, 2, consolidate="fifo"), np.ones((2, 1, 2), np.float32))
    assert fifo.append(2, np.ones((1, 2), np.float32), 2, 2.0, POSE) == 0


def test_stream_defaults_follow_vla_two_blocks_and_a_quarter_width_frequency():
    s = StreamMemory(32)
    assert len(s.blocks) == 2 and s.timestep.frequency_dim == 8 and s.gate is not None
