"""MemoryVLA: a perceptual-cognitive memory bank (Shi et al., 2025, arXiv 2508.19236; code
shihao1895/MemoryVLA), as a navigation memory.

What the paper does
-------------------
MemoryVLA is a vision-language-action policy for long-horizon manipulation. At each policy step
a 7B Prismatic VLM gives a **working memory**: perceptual tokens ``p_t`` (DINOv2 + SigLIP patch
features compressed by a squeeze-excite bottleneck to 256 channels) and one cognitive token
``c_t`` (the LLM's last hidden state at the EOS position). A **Perceptual-Cognitive Memory Bank**
(PCMB) keeps, per stream and per episode, an ordered list of at most ``L = 16`` entries
``(timestep, tokens)``. Each step, per stream:

1. **retrieve**: two cross-attention blocks (query = working tokens; keys = bank tokens plus a
   sinusoidal timestep encoding passed through Linear-SiLU-Linear; values = bank tokens);
2. **fuse**: ``g = sigmoid(W_g [x ; r] + b_g)``, out ``g * x + (1 - g) * r`` (W_g, b_g ~ N(0, 1e-3));
3. **write** the step's tokens (detached) and **consolidate**: while the bank holds more than L
   entries, merge the adjacent pair with the highest per-token cosine (averaged over tokens)
   into their mean (token merging, "tome"); "fifo" is the ablation.

The fused tokens condition a diffusion action head (DiT, DDIM, CFG) trained end to end.

The two public code paths, and the one we follow
------------------------------------------------
``vla/memory_vla.py`` (the Prismatic / CogACT code the paper's training scripts run) and
``dexbotic/model/memvla/memvla_arch.py`` (a port) disagree: stored feature (raw working tokens
vs fused), merged timestep (``t_k`` vs the pair's mean), heads / dropout (1 / 0 vs 4 / 0.1), the
empty-bank path (return the working tokens vs self-attention with the current PE), the SE design
and the PE frequency dim (``D // 4`` vs 256). **We follow ``vla/memory_vla.py``** throughout: it
is the code behind the paper's own training scripts (``script/train/.../train_mikasa.sh``), the
port is a re-implementation for another framework. One sentence of the project page ("the fused
tokens are updated into PCMB") matches dexbotic instead; ``update_fused: true`` gives that, the
default stays vla's raw tokens: an entry is then the mean of the perceptions of the frames it
names, which is what recall reads.

What we do (files)
------------------
- ``modules.py``: timestep encoding and embedder, the retrieval block, the gate, the stream,
  vla's BottleneckSE, our small image encoder and the cognitive encoder.
- ``bank.py``: ``MemoryBank``, one stream's bank: fixed arrays for ``capacity + 1`` entries
  (bytes never change), consolidation (tome / fifo), and the frames each entry came from.
- ``system.py``: the ``MemorySystem`` (``build("memory", {"name": "memoryvla"})``), config
  ``MemoryVLAConfig`` mirrored by ``configs/memory/memoryvla.yaml``.
- ``train.py``: ``python -m embodied_mem.memory.memoryvla.train`` fits the cognitive stream.
- ``vlm.py``: the optional Hugging Face VLM front end (local files only).
- ``weights.safetensors``: trained modules (how they were made, and why they are not the default: below).

Per observation: ``obs.validate()``; the frame gate (idempotent per frame id, time order); the
detections with depth (``visible_instances``) are the step's perception. Working memory:
``p_t`` = ``ImageEncoder(rgb)`` (N_p = 16 tokens of d_p = 128) and ``c_t`` =
``CognitiveEncoder(MiniLM(perceived semantics))`` (1 token of d_c = 128), where the perceived
semantics are the room the floor plan puts the robot in, the detector's descriptions (label and
attribute guesses, largest first) and the robot's own grasp / release; the MiniLM embedding is the
normalised mean of those parts' embeddings. Then, per stream, retrieve (from earlier steps) ->
fuse -> write -> consolidate, exactly as above, with the timestep = the step counter (the paper's
policy-call counter). The last fused tokens are kept (``fused``: what an action head would take).
Under the write lock the whole step is all or nothing: banks, kept frames, tracker and diary are
restored if anything raises.

Frames. The paper's entries are anonymous tokens; a navigation memory must say *where* to go, so
each entry also names the frames it came from (frame id, stamp and pose): a new entry names its
step's frame, a merged entry the union of its members' frames in time order, and past
``frames_per_entry`` (8) an evenly spaced subset of that union (first and last kept), so the
bank's bytes are fixed (a 10k-step history has the same bank bytes as a 100-step one; tested).
For each frame some entry still names, the memory keeps that frame's detections (label,
attributes, score, 3D centroid and extent, mask fraction, track id): at most 2 x 16 x 8 frames.

Oracle track (``query.constraints``, the shared reasoner in ``resolve.py``):

- ``diary``: the robot's own grasps and releases, all of them, as frame_bank's diary: the shared
  ``EntityTracker`` runs online over every frame's detections, and infers at the moment of the
  event which track the gripper took / put down (``tracker.infer``). The robot knows what it did.
- ``catalog()``: **what the bank still names**, not what the tracker knows. Entities = confirmed
  tracks that appear in some kept frame; category and attributes = the score-weighted majority
  over those kept sightings alone; position and box = the kept sightings where the entity is
  now (since the robot last moved it, within 0.5 m of the latest). An object the robot itself
  put down after its last kept sighting is where it put it (the diary's knowledge), as is one
  it moved that no kept frame shows. The tracker's own running state is used for identity (which
  detections are one entity, and whether it is confirmed) and for the diary's event inference,
  never to bring back an entity the bank forgot: a 16-entry bank over a long history cannot
  know every object, and that is the system being measured. (We chose this over "the tracker
  over all frames", which would make the bank irrelevant to the oracle track.)
- ``locate(goal)``: for each entity the kept frame that shows it best where it is now (mask
  fraction, x0.3 beyond 2.5 m or 35 degrees, as every system), the interaction pose when the
  diary has one, else the release frame; rooms from the diary's stays.

Language track (text only): the query text through the same cognitive encoder
(``CognitiveEncoder(MiniLM(text))``) is the cognitive query ``c_q``; it attends over the cognitive
bank (the retrieval blocks with the timestep encodings on the keys) and is gated with what it
retrieved into the fused query token ``f_q``; the bank entries are ranked by the readout attention
``softmax_j(cos(f_q, m_j) / temperature)``, and the hits are the frames of the highest-attention
entries, entry by entry (within an entry, its frames ordered by how well their detections'
descriptions match the text; the best such detection gives ``target_xyz``).

Substitutions (a foundation model not available offline, replaced honestly)
-------------------------------------------------------------------------
- DINOv2 + SigLIP patch features -> a small conv encoder (rgb at 64x64, three stride-2 convs,
  a 4x4 grid) + vla's BottleneckSE (C_mid = 2 d_p, SE ratio 16): 16 perceptual tokens of 128.
- The LLM's EOS hidden state -> Linear(384 -> 128) + LayerNorm over the MiniLM embedding of the
  step's perceived semantics (the detector's labels / attributes, the room, grasp / release).
- ``vlm: <local path>`` swaps both for a Hugging Face VLM's patch features and last hidden state
  (``vlm.py``; loaded with ``local_files_only``, never downloaded, not run by default).
- Token widths 128 / 128 instead of 256 / 4096 and 16 patches instead of 256: CPU budget, and a
  weights file of a few MB.

Departures, with reasons
------------------------
- No action head (navigation has none): the fused tokens serve recall instead (above).
- Training (``train.py``): the paper trains through the diffusion loss; we fit the cognitive
  stream with a contrastive recall objective (multi-positive InfoNCE: the fused token of a query
  built from a detected category must land on the bank entries whose frames saw it), with banks
  built by the run-time write path on prefixes of simulator histories (seeds 1000+, disjoint from
  the evaluation seeds), stored entries detached as in the paper. The perceptual stream gets no
  signal from it and keeps its seeded initialisation (it is in the file as such).
  ``weights: null`` runs the untrained mechanism (seeded init).
- One episode = the robot's whole history (all days): the bank is never cleared at a day start,
  as the tasks ask about any day. ``reset()`` empties it (the paper's new episode).
- Entries name frames (bounded, above); the paper keeps none.
- The step's semantics for ``c_t`` include the floor-plan room: the prompt of the paper's VLM
  is the instruction, which a history does not have; the perceived scene is what there is.

Shipped weights (not the default)
---------------------------------
``weights.safetensors`` (4.0 MB, float32, every module) was made with
``python -m embodied_mem.memory.memoryvla.train --threads 1 --out <file>`` (defaults: 6 one-day
histories of 4-room homes, seeds 1000-1005, two more (1006-1007) held out, 300 AdamW steps of
4 banks x 16 queries, lr 1e-3, MiniLM; 154 s on a shared 2-core CPU); its safetensors metadata
holds the training report. The training loss fell from 1.37 to 0.67, but the held-out top-1
(the highest-readout entry is a positive) barely moved (0.586 -> 0.594), and on the raw-text
language track (``eval.agent.reasoner=text``, embedded_small, 1 episode) the trained modules
scored 0 % against 22 % for the untrained mechanism (oracle track: 94 % both). So the default is
``weights: null`` (the untrained, seeded mechanism: the cognitive encoder is then a random
projection that keeps MiniLM's geometry, and the gate starts at ~0.5), and the file is there to
be loaded with ``weights: weights.safetensors`` and improved on.
"""

from embodied_mem.memory.memoryvla.system import MemoryVLA, MemoryVLAConfig, build_memoryvla

__all__ = ["MemoryVLA", "MemoryVLAConfig", "build_memoryvla"]
