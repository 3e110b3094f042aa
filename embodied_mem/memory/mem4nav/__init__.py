"""Mem4Nav: a hierarchical spatial-cognition long-short memory (He et al., 2025, arXiv 2506.19433).

What the paper does
-------------------
Mem4Nav gives a vision-and-language navigation agent in city streets two spatial structures
and two memories:

- a **sparse octree**: world points are quantised (``floor(p * 2^Lambda / L)``) and addressed by
  Morton keys; only visited leaves exist; each leaf keeps a long-term memory token;
- a **semantic topology graph**: landmark nodes (descriptor, position) created when an
  observation is far (L2 > delta) from every node descriptor, else merged by running mean;
  directed edges weighted by travelled distance plus an instruction cost; Dijkstra routing;
- a **short-term memory (STM)**: K = 128 recent entries in coordinates relative to the current
  graph node, evicted by frequency and recency, retrieved within a radius and ranked by cosine;
- a **long-term memory (LTM)**: a reversible transformer R writes each leaf's / node's token
  ``theta_new = R([theta_prev ; v_t])`` (2d-dim); tokens are indexed (HNSW) and found by k-NN,
  then decoded exactly with R^-1 to get the stored observation back;
- **multi-level retrieval**: STM first; the LTM when no STM entry is good enough (cos < tau).
  The retrieved memories become extra visual tokens of the navigation policy (FLAME), and R
  and the query projection are trained end to end with the navigation loss.

What we implement (files)
-------------------------
- ``octree.py``: correct 21-bit-per-axis Morton keys, configurable depth / world size / origin,
  a dict of visited leaves, parent = ``code >> 3``, per-level sets of live internal nodes and a
  radius query that descends from the root pruning boxes by box-sphere distance.
- ``graph.py``: the semantic graph on a networkx DiGraph (node rule, edge rule with the 2-way
  mean, no self-loops, Dijkstra).
- ``stm.py``: the short-term cache (fixed arrays of K slots, each with its write-time anchor).
- ``ltm.py``: the reversible transformer (additive coupling, F = multi-head self-attention,
  G = GELU MLP; depth 6, 8 heads, MLP ratio 4), an exact token index and read caches.
- ``state.py``: checkpoint helpers; each component has ``to_state()`` / ``from_state()``.
- ``system.py``: the ``MemorySystem`` (``build("memory", {"name": "mem4nav"})``), config
  ``Mem4NavConfig`` mirrored by ``configs/memory/mem4nav.yaml``.

Inputs. A frame brings what a robot has: RGB-D, its own (possibly drifting) pose, the
perception module's per-frame detections (class-labelled masks with the detector's attribute
guesses and a score; in the embedded simulator a simulated detector with misses, false
positives, label confusion, wrong attributes and depth noise; or, as an upper bound only, the
``gt`` mode whose detections carry the simulator's instance ids), and proprioceptive grasp /
release events (base and gripper pose, no entity named). Nothing names an entity, so the
paper's "object" needs an identity the paper never defines: Mem4Nav has no association rule of
its own, and uses the shared ``EntityTracker`` (``memory/association.py``; ``tracker`` config).
Its track ids are the entity ids everywhere below (leaf sightings, STM object ids, catalog,
diary); in ``gt`` mode they are the simulator's ids. An entity's label and attributes are its
track's majority votes (``label_of``). Rooms come from the floor plan the robot is deployed with
(``set_floor_plan``, kept over ``reset`` and saved in the diary), never from a frame.

Per observation (our adaptation of the write path): ``obs.validate()`` first (a field changed
after construction is refused before anything is stored). Each detection with depth
(``visible_instances``) is an object observation ``v_t`` = text embedding of the detector's
per-frame description (its label and attribute guesses, possibly wrong) at ``p_t`` = its world
centroid -> octree leaf (key = Morton of ``p_t``) -> LTM write + STM write (``p_rel`` relative to
the current node, and that node's position as the entry's anchor), under the track id the tracker assigned it. Per frame, the descriptor =
normalised mean of the detections' embeddings at the robot's position -> graph node update or
creation, an edge when the node changed, and the node's LTM write. All of a frame's tokens go
through R in one batched call (one thread; see ``torch_threads``). Events: the tracker infers
what a grasp took and where a release put it (``tracker.infer``); events up to the frame's
first grasp are inferred before the frame's association (a release's frame shows the object
already put down, so that sighting joins the moved track) and the rest after (a grasp's frame
shows the object before it is lifted); the inferences go to the action diary (``record``).
Frames with no usable depth or no detections write no geometry (nothing is placed, so there is
no descriptor either) but are recorded in the action diary and counted as seen.

Recall. An object the robot moved is where it put it: after a release the track's position is
the release point (``track.moved_at``), and the track's leaf sightings older than that are stale
(they show where it used to be), so every answer below uses only sightings since ``moved_at``;
a moved object not seen since answers from its release (the point, and the diary's release
frame). Every hit names a real history frame (``Hit.frame_id``) whose pose shows the target:
FindingDory's high-level check teleports to that frame's true pose.
Oracle track (``query.constraints``): the shared reasoner reads ``diary``, ``catalog()`` (every
confirmed track, ``tracker.confirmed()``, at the leaf of its most recent current sighting;
category / attributes from the track; ``extent`` = the boxes of its leaves there: all of a
receptacle's leaves, an object's within ``locate_radius``; a moved object not seen since at its
release point) and ``locate(goal)``: for each entity, multi-level retrieval with ``v_q`` =
embedding of its track's description asked from ``query.near``; retrieved leaves (and leaves
within ``locate_radius`` of them, found by the octree's radius query) that saw the entity since
it last moved are preferred, most recent sighting first; when retrieval misses it, or only
finds a place it was seen before (farther than ``locate_radius`` from its latest sighting), the
leaf bookkeeping answers (``evidence["source"]`` says which: "stm", "ltm" or "bookkeeping").
``Hit.target_xyz`` = leaf centre; ``Hit.agent_pose`` / ``frame_id`` = the observer pose and frame
of the best view of the entity among the leaves within ``locate_radius`` of that leaf (the view
quality is frame_bank's: mask fraction, discounted beyond 2.5 m or 35 degrees off-centre;
``Hit.score`` is that quality), or the diary's interaction pose and frame for receptacle goals
that have one; entities not seen with depth since they last moved fall back to the diary's
interaction / release pose and frame (``evidence["source"] = "diary"``). Goals naming an
interaction whose object the tracker could not tell (``None``) get no hit. Room goals use the
diary's room stays.
"Farthest from where you are now" ranks candidates by ``distance_from(near)``: a route over the
topology graph (Dijkstra from the ``route_ends`` nodes nearest the robot to those nearest the
candidate, plus the two short end legs; straight line when no route joins them). The graph
is the paper's routing structure, but its nodes are *semantic* landmarks: in a home 11-12
nodes cover two days (their positions are running means of far-apart places), so these
routes are coarse; on 5 episodes they lift Spatial Relationship from 29 % (straight line) to
64 %, against 79 % for frame_bank, which routes along every pose it kept.
Language track: ``query.text`` is embedded and run through multi-level retrieval from the
robot's pose; hits are the retrieved leaves (the leaf's current entity best matching the text;
stale sightings of moved objects are left out) or graph nodes (the frame that last updated
the node, and its pose: a node's position is a running mean, not a place anyone stood; no
target), one per object.

Substitutions
-------------
- ``v_t``: text embeddings (``minilm``, or ``gt_hash`` for speed) of the detector's per-frame
  descriptions (label and attribute guesses) stand in for the paper's visual (RGB + depth)
  features. Object identity comes from the shared tracker, not from the paper (it has none).
- R is **untrained**: PyTorch's default init under ``torch.manual_seed(rt_seed)`` with the
  residual output layers scaled by ``rt_init_gain`` (0.03), eval mode, dropout 0, so it is an
  exact bijection that keeps the geometry of what it encodes (|R(x) - x| = 0.34 |x|); at the
  default init it scrambles tokens and the L2 step finds the best key for only 62-73 % of text
  queries, against 97 % here (numbers in ``ltm.py``). The paper trains R end to end with a
  navigation loss (plus a cycle loss) that we do not have. The learned query projection
  ``Proj([v_t ; p_t])`` is replaced by ``q = R([0 ; v_q])``; the learned heads ``pi_p`` / ``pi_d``
  are not used: positions come from the key (leaf centre by Morton decode, or node position).
- Exact numpy k-NN instead of HNSW: the index holds one live token per visited leaf and graph
  node, rewritten by every observation of that place; the benchmark home has 354 after one day
  and 354 after 100,000 replayed observations (170 days), where the scan costs ~0.1-0.3 ms,
  while one hnswlib update at the paper's M = 64 / efConstruction = 500 costs 10-46 ms (1k-20k
  points, 768-d; ``ltm.py``).
- ``c_instr`` is the public code's constant 0.1: during history collection there is no
  instruction to cost.

Departures from the paper / public code, and fixes of the public code
----------------------------------------------------------------------
- F, the attention of each reversible block, attends over the d-vector cut into ``rt_chunks``
  (8) pieces of d/8 (plus a fixed per-piece position embedding): a token is one 2d vector, not
  a sequence, so the public code's self-attention over a single position would be a plain
  linear map. Dropout is 0 (the paper's 0.1 breaks exact inversion, its bug 7).
- ``rt_init_gain`` (0.03): R's residual output layers are scaled down at init, so the untrained
  R stays near identity and tokens keep the geometry of what was written (``ltm.py`` has the
  numbers); the paper trains R instead.
- Cosine re-rank: the L2 step returns ``ltm_candidates`` (32) tokens, which are decoded with R^-1
  and re-ranked by ``cos(v_s, v_q)`` down to ``ltm_top_m`` (3): an untrained R's token space is
  not a semantic space (the paper returns the L2 top-m of a trained one).
- STM anchors (a fix): each STM entry keeps the position its graph node had at write time,
  and retrieval re-anchors it on the node current now (``p_rel,i + anchor_i - p_{u_c}``) before
  the epsilon test. The public code compares the stored ``p_rel,i`` with ``q_rel`` as if every
  entry had been written at the current node and nodes never moved; node positions are running
  means and the robot changes nodes, so on the benchmark day (gt_hash) the positions that test
  implied lay a median 3.4 m from the entry's leaf, 73 % beyond epsilon = 3 m (``stm.py``).
- Leaves keep no ``observations_count`` and no last ``v_t`` (the public code's fields): nothing
  read them, and ``last_v`` cost 1.5 KB a leaf; the latest ``v_t`` is what R^-1 of the leaf's
  token gives back.
- Read caches (exact; not the paper's, which has no cost model): in the LTM (``ltm.py``) the
  decoded ``v_s`` of each key until its next write, and the query tokens of recurring queries
  (entity descriptions), computed in fixed-shape batches so that a cached value equals an
  uncached read (``stats().bytes`` counts the decode cache at its warm size, one v_s per live key,
  whether or not a read came yet, and leaves the query LRU out: ``ltm.py``); in the system, ``catalog()`` and the tracks'
  description embeddings until the next write (``catalog`` hands out copies; recall reads the
  kept entries), catalog entries and each track's latest leaf per track state, and the diary's
  last release per object per change. ``flush()`` does the deferred reads' work ahead: the
  decodes, the catalog and the query tokens of every entity's description.
- Geometry: the paper's Lambda = 16 over L = 100 m gives 1.5 mm leaves (street-scale VLN). In a
  home objects are re-observed from many poses and centroids jitter by centimetres, so the
  default is depth 8 over 51.2 m with origin -25.6 m on each axis: 0.2 m leaves. Configurable.
- Morton masks fixed (the public code maps every point to key 0); negative coordinates are
  shifted by the origin instead of clipped to 0; points outside the cube are skipped, not
  clamped (counted in ``out_of_bounds``).
- Graph edges exist (the public code passes node objects where ids are expected, so it never
  adds one). Keys are namespaced ``("leaf", morton)`` / ``("node", id)`` (the public code's node
  0 collides with Morton key 0).
- LTM history: ``theta_prev`` = first half of the key's previous token. The public code decodes
  the previous token first, which returns the previous *input* theta, i.e. zeros forever (its
  bug 10). We additionally rescale ``theta_prev`` to norm ``ltm_theta_norm`` (0.1): with an
  untrained R the first half grows linearly with the number of writes, and often-seen places
  then drift away from every query in L2 (24-45 % vs 100 % of queries finding their key among
  the L2 candidates in our test); ``ltm_theta_norm: 0`` carries theta raw.
- One live index row per key, rewritten in place; freed rows are reused (the public code
  consumes a new HNSW label per write and fails after 20,000 writes).
- Tokens are stored once, in the index (the public code also copies each onto its leaf / node).
- Our bookkeeping on leaves (used by ``catalog`` / ``locate``): per track seen there, a
  ``Sighting`` (last-seen stamp; frame, observer pose and quality of its best view there); the
  leaf's last stamp. Per graph node, the frame (id and pose) that last updated it. Plus a
  derived track -> leaves index; labels live in the tracker.
- STM and LTM are written for object observations, the LTM also for graph nodes
  (``write_nodes_to_ltm``); the STM clock counts frames that wrote geometry.

All or nothing
--------------
``observe`` changes nothing if anything inside it raises, without copying the memory per frame:
the tracker and the diary keep their own undo (``begin`` / ``rollback``, ``mark`` / ``rollback``);
every other change (graph node added or merged, edge added or smoothed, current node, noted frame;
octree leaf and the level codes it registered, a leaf's sighting and last stamp; LTM token put
back or key removed, index growth undone, the decode cache of those keys as it was; STM slot,
key and eviction; ``track_leaves``; sightings of tracks the tracker dropped) records its inverse
in a ``Journal`` (``journal.py``), undone newest first. The STM / LTM / clocks / stream
bookkeeping then equal those of a memory that never saw the frame, so observing it again gives
exactly the state of one that never failed.

Unconfirmed tracks decay (``TrackerConfig.unconfirmed_ttl``, the shared association rule): a
track the tracker drops takes its leaf sightings with it (the leaves and their tokens stay).

Checkpoints and size
--------------------
``save`` writes json + npz through ``base.save_manifest``: each component's own ``to_state()``
(octree: leaves and sightings; graph: nodes, edges, current node; STM: slots with anchors;
LTM: R's spec and weight checksum, theta's norm, keys and tokens), its arrays prefixed with the
component's name (``octree.codes``, ``stm.anchor``, ...), plus tracker, diary with its floor
plan, gate and clocks. R's weights are not saved: they are regenerated from the seed. ``load``
(``restore`` for an in-memory state) rebuilds every component with its ``from_state()``, which
refuses inconsistent arrays, then refuses a checkpoint whose R checksum, octree geometry,
encoder or STM / graph parameters differ from this memory's, whose STM / LTM keys name no leaf
or node, or whose tracker is missing, malformed or lacks a track that a sighting names; all
with ``ValueError``, leaving the memory as it was. The read caches are not saved. ``stats().bytes`` counts
every numpy array (the LTM's decode cache at its warm size, so the number is the same whether or not
a recall came first; the query-token LRU, which holds what was asked, is left out) plus an estimate of the Python objects around them (per leaf, sighting,
node, edge, key, track, diary entry, seen frame id); R's ~29 MB of weights are excluded, like
the text encoder's.

What to expect (measured on the 2-core CPU box, gt_hash, 1 day)
---------------------------------------------------------------
Default embedded episode (seed 0, 320x240, 824 frames): observe() 6-7 ms per frame (4 ms at
160x120; R's one batched forward is most of it). Recall (the benchmark home replayed, MiniLM,
2-core box under load, frame_bank interleaved query by query): at 100,000 observations p50 /
p95 22 / 77 ms (frame_bank 48 / 82) with each instruction new to the text encoder, whose
MiniLM pass (11-60 ms on that box) dominates both systems' language track; with the encoders'
caches warm, 11 / 22 ms (frame_bank 36 / 98); the oracle track 2.8 / 22 ms cold (frame_bank
46 / 69). What is left of Mem4Nav's own work: one R forward for a text query's token (~3-10
ms), the first read after writes (decoding the stale keys), the catalog once per state. Detector perception: 5.3 MB after the day, +1.8 % when it is replayed;
the graph has 92 nodes against 27 with gt ids, because confused labels and false positives
move a frame's mean descriptor past ``node_threshold`` more often (so the LTM index doubles).
gt perception: 3.3 MB, +2.3 % on replay. On 4 small one-day episodes (seeds 3, 5, 7, 11) the
object-goal "first / second / third object you moved" hit named a frame whose true pose
satisfies FindingDory's object check in 11 of 12 cases in both modes (the miss: an apple put on
a bed that no later frame shows by more than 2 pixels), and every receptacle-goal hit did.
Not re-measured since the change to detector input: with ground-truth instance ids, on
``sim=embedded_small`` (56 tasks) the oracle track matched frame_bank (100 % vs 98 % success)
and the language track was weaker than frame_bank (16 % vs 27 %): Mem4Nav's memories hold what
was seen and where, not the robot's actions, the time or room names, so "the receptacle you
placed the can on" finds the can.
"""

from embodied_mem.memory.mem4nav.system import Mem4Nav, Mem4NavConfig, build_mem4nav

__all__ = ["Mem4Nav", "Mem4NavConfig", "build_mem4nav"]
