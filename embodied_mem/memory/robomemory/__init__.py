"""RoboMemory: a brain-inspired multi-memory agent framework (arXiv 2508.01415).

No code of the paper has been released ("Code will be released soon!"), and no paper body was
read: the checklist (``reference/robomemory.md``) marks what comes from the abstract, the
project page, an alphaXiv overview and a third-party reading note of v7. This is a first
runnable implementation from that checklist; values marked [note] there are our defaults.

What the paper does
-------------------
Per step, an **Information Preprocessor** ("thalamus") makes two VLM calls in parallel: a Step
Summarizer (a text summary s_t) and a Query Generator (queries q_t for each memory). Four
memories are then updated *concurrently*, each ``M_t^k = U_k(M_{t-1}^k, s_t)``:

- **spatial**: a dynamic knowledge graph (objects / locations and their relations), updated by
  retrieval: top-N (3) vertices most similar to s_t -> their K-hop (2) subgraph -> a VLM resolver
  compares it with s_t and emits add / delete / modify ops -> selective merge, isolated vertices
  pruned;
- **temporal**: a FIFO of step summaries (capacity 4); on overflow a VLM compresses the oldest
  into one summary kept at the head;
- **episodic**: a vector DB of past task interaction histories (top-5 retrieval);
- **semantic**: a vector DB of action- and task-level experience, updated by a VLM that returns
  add / update / remove / no-op for the most similar entries.

Retrieval ``r_t^k = R_k(M_t^k, q_t^k)`` runs in parallel too, and feeds a **closed-loop
Planner + Critic** ("prefrontal"): the critic checks each planned step against feedback and
memory and may trigger a replan; it is skipped at the first step to avoid infinite replanning.
Long-term memory (episodic + semantic) persists across tasks. Backbone Qwen2.5-VL-72B,
embeddings Qwen3-Embedding; real-robot execution by a LoRA pi0 and SLAM (not in scope here).

What we do (files)
------------------
- ``summary.py`` (preprocessor): ``DeterministicSummariser`` turns one frame into a
  ``StepSummary``: the entities in view (named, positioned), the spatial facts the frame
  supports (object *on* receptacle: the object's centre above a surface's seen box; receptacle
  *in* room: the floor plan at its position; object *near* object: within 0.5 m; an object with
  no surface *in* the room), what the robot's grasp / release were about (object *held_by* the
  robot; object *on* the receptacle it was put on), a text s_t and the queries q_t (the spatial
  seed query is the salience ranking). Event texts are embedded here, once, so no memory update
  calls the encoder. ``LLMSummariser`` (``reasoner: llm``) lets a chat model rewrite s_t's text
  and rank the salient vertices; its JSON is validated, invalid replies keep the deterministic one.
- ``spatial.py``: the KG on networkx (vertices ``e<id>`` objects / receptacles, ``room:<name>``,
  ``robot``; relations on / in / held_by, exclusive, and near) with the retrieve -> expand ->
  resolve -> write-back cycle and a rule-based resolver; ops reaching outside G_sub are deferred
  (counted), never applied. Vertices carry position, box, last-seen stamp / frame and the best
  view since the entity last moved (frame id, pose, score), so ``catalog()`` / ``locate()``
  answer the oracle track from the KG.
- ``temporal.py``: the FIFO with a fixed-rule compression (the two oldest merge; the head keeps
  its frame / time range, its rooms in order and its last 8 events). Cleared at each day start.
- ``vectors.py``: a ``VectorStore`` (cosine top-k, ties by key) with the add / update / remove /
  noop updater, ``EpisodicMemory`` (one entry per pick -> place) and ``SemanticMemory`` (action
  experiences with counts, "where is X" beliefs removed on pick and re-added on place, one
  summary per day). Both are bounded (``*_capacity``: the least recently updated is removed).
- ``planner.py``: ``DeterministicPlanner`` / ``DeterministicCritic`` / ``closed_loop`` and the
  ``LLMPlanner`` / ``LLMCritic`` variants (validated JSON, deterministic fallback).
- ``reasoning.py``: the ``ChatModel`` protocol (``chat(messages) -> str``: ``embodied_mem.llm.Chat``,
  with a local copy should that module be absent), ``client_from_env`` (``embodied_mem.llm``'s,
  None when the variables are unset) and a JSON helper that never raises.
- ``system.py``: ``RoboMemory`` (``build("memory", {"name": "robomemory"})``), config
  ``RoboMemoryConfig`` mirrored by ``configs/memory/robomemory.yaml``; ``consolidate_diary``.
- ``scoring.py``: the KG's on / in edges against a simulator's truth (tests and benchmark only).

Per observation: ``obs.validate()``; ``FrameGate`` (idempotent per frame id); the shared
``EntityTracker`` associates the frame's detections into tracks and infers what a grasp took
and where a release put it; the ``ActionDiary`` records that; the summariser builds s_t; the
four updates run on a thread pool (``parallel``; ``update_memories(s, order=...)`` runs them one
after another in any order, with the same result). All or nothing: the tracker, the diary and
every memory keep an undo journal for the frame, and anything raising restores all of them.

Recall. Oracle track (``query.constraints``): the shared reasoner (``resolve.py``) reads the
diary, ``catalog()`` (every KG object / receptacle vertex) and ``locate()`` (a vertex's best
view since it moved; the pose the robot held to pick from / place on a receptacle); its hits
per goal are the candidates of the closed loop. Language track: the deterministic Query
Generator reads the target kind (the categories the KG knows decide object vs receptacle), the
day ("yesterday", "N days ago" against the memory's own calendar), a receptacle's role, and
the selectors (ordinal, "at H:MM", longest / shortest, "took N seconds", "did not", "farthest");
the four retrievals run in parallel: KG top-N seeds by cosine between the query and vertex
texts + their K-hop subgraph; episodic top-5 (of the day, when one is named) re-read by the
planner's selectors; semantic top-k beliefs / experiences; the temporal buffer (where the robot
finished). Every candidate is grounded in the KG's *current* belief (a retrieved episode about
an object answers with where the KG believes it now). The closed loop then orders the goals'
candidates; the plan's choice per goal scores highest. Every hit names an observed frame.

Substitutions (honest input only)
---------------------------------
- The VLM that names objects -> the shared ``EntityTracker`` over the detector's per-frame masks
  (no ids in the default ``detector`` perception); its track ids are the KG's entity ids.
- The VLM step summarizer / query generator / KG resolver / semantic updater / planner / critic
  -> deterministic rules (offline default); an LLM for the summariser, planner and critic when
  ``reasoner: llm`` (any ``.chat(messages) -> str``; never the default).
- Qwen3-Embedding -> MiniLM text embeddings (``encoder: minilm``) or label-word hashes (``gt_hash``).
- "Similar to s_t" for KG seeds during update -> identity with s_t's salience ranking (the
  tracker names entities exactly, so the vertex s_t is about *is* the most similar one);
  during recall the seeds are chosen by embedding cosine, as in the paper.

Departures (and why)
--------------------
- The KG's K-hop expansion during an update runs over G plus the edges s_t asserts: applying
  the same s_t twice then retrieves no more than the first time, which makes the update
  idempotent (checklist invariant 4); over G alone a vertex created by the first application
  could widen the second one's subgraph.
- Node attributes obey the same locality as edges: a vertex outside G_sub is not touched,
  even when s_t mentions it (its update is deferred until a later step retrieves it).
- No negative evidence: an object that is not seen where the KG believes it is stays there
  until something else is seen or done (the paper's VLM might notice an absence).
- Compression merges the two oldest temporal entries (the number is not given).
- Episodic entries are written when a place closes a pick (per step vs per task end is not
  given); the day is the task session for the temporal buffer (reset rule not given).
- ``max_replans`` (2), the store capacities, top-S (3) and the merge threshold are ours.
- The critic checks plan steps against memory only (there is no visual feedback at recall time).
- The action diary every system keeps (``ActionDiary``, base.py) grows with the life; it is
  consolidated here (``diary_full_days`` / ``diary_max_days``) so a 100-day life stays bounded.
- ``distance_from`` is straight-line (the KG keeps no free-space map).
"""

from embodied_mem.memory.robomemory.system import RoboMemory, RoboMemoryConfig, build_robomemory  # noqa: F401  (registers "robomemory")
