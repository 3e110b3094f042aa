"""JanusVLN: a dual implicit neural memory (Zeng et al., 2025, arXiv 2509.22548; code MIV-XJTU/JanusVLN).

What the paper does
-------------------
A vision-and-language navigation agent (Qwen2.5-VL-7B) keeps no explicit map and no frame
list: its memory is the **KV cache** of two encoders. A *semantic* encoder (Qwen2.5-VL's vision
tower) and a *spatial-geometric* encoder (the VGGT-1B aggregator, over RGB alone) each see every
new frame once; their attention layers keep the keys and values of the **first 8 frames and the
last 48 frames** and drop the frames in between as whole slices, so memory and per-step cost are
flat however long the episode runs, and nothing of the past is recomputed. At each step the new
frame's tokens attend over the cached frames (VGGT's global attention, causal over frames), the
spatial output goes through a merger MLP and is added to the semantic tokens
(``visual + 0.2 * merger(vggt)``), and the LLM reads the fused tokens and emits an action.
Public code: only the VGGT cache is released (``StartRecentKVCache(start_size=8,
recent_size=48)``, run after each evaluation step); its maintainer says (issue #8) the Qwen
semantic cache code was never published, the released semantic side passes up to 8 explicitly
sampled history frames instead. Checklist: ``shared/reference/janusvln.md``.

What we implement (files)
-------------------------
- ``cache.py``: ``FrameSliceLayer``, a ``transformers.cache_utils.DynamicLayer`` that keeps whole
  frame slices (K, V ``[1, heads, frames * P, head_dim]`` + their frame ids) and evicts all but
  the first ``start`` and last ``recent`` after each frame; ``StartRecentCache``, a
  ``transformers`` ``Cache`` of those layers, with snapshot / restore (all-or-nothing observe)
  and bit-exact safetensors / array checkpoints. Why no stock class fits: ``transformers`` 5.x
  has no sink cache any more, and its sliding layers keep a window of *tokens* (no initial
  frames, a window cutting through frames); see that module's docstring.
- ``attention.py``: ``CachedTransformer``, VGGT-style global attention blocks (pre-LN; q / k
  RMSNorm per head; 2-D RoPE on the patch grid with the camera token at position 0; MLP).
  ``step`` runs one new frame over the cache, ``forward_frames`` is the uncached path with a
  frame mask (upstream's training path), ``read`` is one query token's attention over a cached
  layer. As upstream, K is cached before ``k_norm`` and RoPE, both re-applied to the kept keys
  at every step, and cached frames reuse the current frame's positions.
- ``encoders.py``: the two tokenizers (a frame = one camera token + ``grid x grid`` patch
  tokens, aligned between the two encoders), the mergers and the fusion
  (``semantic_merger(sem) + lam * spatial_merger(spa)``, ``lam`` = 0.2, 2 x 2 merge), and a
  Hugging Face backbone adapter.
- ``dual.py``: ``DualImplicitMemory``: both cached encoders, both caches, one ``step``.
- ``system.py``: the ``MemorySystem`` (``build("memory", {"name": "janus"})``), config
  ``JanusConfig`` mirrored by ``configs/memory/janus.yaml``.

Substitutions (no foundation model is available offline)
--------------------------------------------------------
- Semantic encoder: instead of Qwen2.5-VL's vision tower, a patch token is the patch's colour
  statistics (a seeded random linear map) plus the **detector's labels**: the text embedding
  (``encoder``: MiniLM, or ``gt_hash``) of the descriptions ("small red ceramic mug") of the
  detections falling in the patch, each weighted by its score and the share of its mask in the
  patch (a small object owns its patch rather than drowning under the table), through a fixed
  orthonormal map into the channels of all heads but the last (the *read heads*); the colour
  and the camera token live in the last head's channels. An untrained net cannot name what it
  sees; the labels are the detector's per-frame output (misses, false positives and wrong
  attributes included).
- Spatial encoder: instead of VGGT inferring geometry from RGB, a patch token is the patch's
  back-projected world points (mean), camera-frame points, depth and valid fraction; the camera
  token is the robot's own pose. A robot has depth and pose; VGGT's job is to estimate them.
- Both transformers are small (widths 256 / 64, 4 heads, 2 cached layers) and **untrained**:
  seeded weights, with Q and K projections starting at the identity so that attention is
  similarity of the normalised tokens; V, projection and MLP random and small.
- Pluggable: ``semantic_backbone`` / ``spatial_backbone`` = ``"hf:<model id or folder>"`` puts
  a Hugging Face vision model (``AutoModel``, ``local_files_only=True``: nothing is downloaded)
  in place of the hand-made image features (its last hidden state pooled to the patch grid):
  the colour statistics on the semantic side, beside the points on the spatial side. The label
  channels and the cached layers stay ours (the KV caches inside an arbitrary HF model's layers
  are not exposed in one form). ``device`` places that model.
- No LLM: nothing consumes the fused tokens except the inspection attribute ``last_output``.
  The memory is read by a query token (below) instead.

Per observation
---------------
``obs.validate()``; ``FrameGate`` (idempotent per frame id). Outside the lock: the patch
features, the detection descriptions' text vectors (cached per string), both tokenizers. Under
the write lock: ``DualImplicitMemory.step`` (each of the 2 + 2 layers appends the frame's K, V,
attends over the kept frames and this one, then evicts), and the frame's small record (pose,
stamp, events, its detections' labels / centroids / extents / pixel counts, each detection's
mask share per patch, each patch's mean world point) is kept beside its KV slices and dropped with
them. Anything raising restores the caches (tensor references: ``update`` never writes in
place) and the records: all or nothing.

Recall, and what is gone
------------------------
**Only the 56 cached frames exist for this memory.** A frame that left the window is gone with
everything it showed: its objects, its grasps and releases, the rooms it passed. That is the
system's nature (bounded memory by forgetting the middle) and the harness shows it: tasks about
anything between the first 8 and the last 48 frames of a history fail.
- Language track: the instruction's text vector, through the same fixed map, is one query
  token; at the semantic cache's ``read_layer`` it attends over every cached token (softmax over
  all kept frames' tokens, logits times ``read_temperature``, averaged over the read heads; the
  keys unrotated, since the query has no image position). The attention mass of each frame ranks the
  hits (``Hit.score`` = the mass, ``evidence["attention_mass"]``); ``time_range`` masks frames
  before the softmax. The place: within the hit frame, the kept detection whose mask covers the
  most attended patches gives ``target_xyz`` (its back-projected centroid) and the entity;
  without detections, the most attended patch's mean world point. ``agent_pose`` is the frame's
  pose.
- Oracle track: the shared reasoner (``resolve.py``) over ``diary``, ``catalog()`` and
  ``locate()`` built from the kept frames only: their detections associated by the shared
  ``EntityTracker`` re-run over those frames (as ``subsampled_frames`` rebuilds its tracks), and
  the robot's own grasp / release events in those frames. ``locate`` gives, per entity, the kept
  frame that shows it largest and most centred where it is now.

Departures, with the reason
---------------------------
- The semantic KV cache is built (same start + recent policy, same frames), though upstream
  never published one: the paper describes a dual cache.
- Order of attention and eviction: upstream's code (``kv_cache_vggt`` after the aggregator call)
  attends first and evicts after, so for t > 56 frame t attends {1..8} and {t-48..t} (57
  frames) and the cache then keeps {1..8} and {t-47..t}. The checklist's "{1..8} U {t-47..t}"
  is the kept set after the step; we follow the code (tested against a plain-list simulation).
- VGGT alternates frame-attention and global-attention blocks (only global ones are cached);
  ours has global blocks only (a frame's own tokens see each other inside them). One camera
  token per frame, no register tokens, the same token slot for every frame (upstream gives the
  first frame its own camera / register slot).
- The query token reads the semantic cache only. The spatial cache's untrained keys live in a
  geometric space a text vector cannot be compared with; its part in recall is the place, read
  token-aligned from what the spatial encoder was given (the attended patches' points and
  detections' back-projected centroids, kept with the frame's slice).
- Upstream tiles the last frame's VGGT tokens over every image in the prompt (checklist
  pitfall); we fuse each frame with its own spatial tokens.
- Rooms come from the floor plan (``set_floor_plan``, kept over ``reset`` and saved), never from
  a frame.

Checkpoints: ``save_manifest`` (npz + json, checksummed): both caches' K / V / frame ids per
layer (bit-exact), the kept records, the gate, the floor plan, and a SHA-256 of the encoder
weights (a checkpoint loads only into the same weights and config). ``StartRecentCache`` also
saves itself alone as safetensors. Tracks and diary are rebuilt from the records on load.
"""

from embodied_mem.memory.janus.system import Janus, JanusConfig, build_janus  # noqa: F401  (registers "janus")
