"""3D-Mem: 3D scene memory for embodied exploration and reasoning (Yang et al., CVPR 2025).

Registered as ``snapshots3d``; config ``Snapshots3DConfig`` (``configs/memory/snapshots3d.yaml``).
Written from the paper and its public code (UMass-Embodied-AGI/3D-Mem @ f5a88d2), see
the project notes ``shared/reference/3dmem.md``; no code was copied.

What the paper does
-------------------
3D-Mem keeps three things while a robot explores:

1. An **object map** (ConceptGraphs): every view is run through YOLO-World + SAM; each mask
   becomes a point cloud (masked depth back-projected, <= 5000 points, voxel-downsampled at
   1 cm, DBSCAN-denoised, dropped if its box centre is > 3.5 m from the agent). Detections
   match map objects by ``sim = (1 + b) * spatial + (1 - b) * visual`` (b = 0; spatial = the
   fraction of detection points within 0.025 m of the object's points when the 3D boxes
   overlap; visual = CLIP cosine) and merge into the best one iff ``sim > 1.2``. Every 12 views
   objects are denoised, far objects with < 2 detections dropped, and pairs overlapping > 0.7
   with cosine > 0.7 merged.
2. **Memory snapshots**: every view is a candidate frame with ``full_obj_list`` (objects it
   saw). A greedy hierarchical co-visibility clustering picks a few frames that together show
   every object exactly once (take the largest cluster; a frame seeing all of it, ranked by
   objects in the frame then confidence sum and preferring frames already picked; else split
   by 2-means on the objects' floor positions). Each step re-clusters only new objects, objects
   within 4 m of the agent and the snapshots holding them.
3. **Frontiers** on a TSDF: free cells on the agent's island whose neighbours are all
   unexplored, clustered, filtered (>= 20 cells) and split (<= 150 degrees), each with a
   frontier snapshot (an image looking at it).
A VLM (GPT-4o) then gets the question, a prefiltered list of snapshots (only those holding one
of <= 10 question-relevant classes) and the frontier images, and chooses a snapshot (go and
look: a free point 0.75 / 1.5 m from its objects) or a frontier (explore).

What we implement (``objects.py``, ``clustering.py``, ``frontiers.py``, ``goals.py``, ``system.py``)
------------------------------------------------------------------------------------------
All three structures, with the paper's rules and hyperparameters, updated on every
``observe`` (frontiers only with ``track_frontiers``, see Departures); retrieval for both
tracks; checkpoints; ``plot``. Each component owns its state: ``ObjectMap``,
``SnapshotMemory``, ``OccupancyMap`` and ``FrontierMap`` have ``to_state() -> (dict, arrays)``
and ``from_state(...)`` (``ValueError`` on malformed data); ``save`` / ``load`` compose them
(array names prefixed ``object_map.``, ``snapshots.``, ``grid.``, ``frontiers.``) and swap the
parsed components in only when all of them parsed.

- Entities are the map's own objects: the ids the shared reasoner sees (catalog, diary, hits)
  are map object ids, never simulator ids. An object's category is the paper's majority class
  of its detections; its kind and attributes are majority votes of the detections' guesses.
- Oracle track: ``catalog()`` lists every map object a snapshot may hold (``num_detections >=
  min_detection``, or carried by the robot) with its box centre, box and last-seen stamp.
  ``locate(goal)`` returns, for each entity id, the snapshot holding the object (``frame_id``:
  a real frame that saw it), ``target_xyz`` = its box centre and ``agent_pose`` = the paper's
  snapshot goal facing it; receptacles with interaction poses in the diary are answered with
  the latest such pose and its frame id (the robot stood there looking at it); an entity the
  map no longer holds but the diary knows gets that pose too; an object in no snapshot gets
  the newest frame that saw it (one the robot put down and nothing saw since: the frame of
  that release); rooms come from the diary.
- Language track: prefilter the snapshots' classes against the query, then rank the kept
  snapshots; ``agent_pose`` is the snapshot goal, ``target_xyz`` the best-matching object.
- The robot's own actions (``Event`` grasp / release: the gripper pose, no entity) are inferred
  from the object map. A grasp takes the nearest map object of kind "object" (box centre
  within ``grasp_radius`` 0.6 m of the gripper); the receptacle under the gripper (a map
  receptacle with >= ``surface_min_detections`` detections whose plan-view box is within
  ``surface_margin`` 0.25 m) is where it came from. While held the object takes no detections
  and no cleanup touches it. A release puts it at the gripper: its whole cloud is translated by
  the gripper's displacement since the grasp (it keeps its offset from the gripper; its
  orientation is not tracked), it leaves every frame and snapshot (those views are stale) and
  the release frame becomes its first view at the new place, on the receptacle under the
  gripper. The grasp frame is merged before the gripper takes the object (it still shows it
  where it stood), the release frame after the move (it shows it where it was put). These go
  into the ``ActionDiary`` as inferences; rooms come from the floor plan (``set_floor_plan``,
  kept over ``reset``). When a periodic merge absorbs an object the diary names, the diary
  is remapped to the keeper, as frames and snapshots are.

Substitutions (no YOLO-World / SAM, VLM, CLIP or TSDF here)
-----------------------------------------------------------
- Detections: the robot's per-frame perception output (``Observation.detections``: a
  class-labelled mask, a score, a kind and the detector's attribute guesses, no identity),
  taken as YOLO-World + SAM output: label -> class, score -> confidence. In the embedded
  simulator that is a simulated detector (misses, false-positive blobs, label confusion among
  look-alike classes, wrong attribute guesses, eroded masks, multiplicative depth noise and a
  drifting localisation: the depth and pose the map is built from are the robot's, not the
  truth), or in the ``gt`` perception mode the instance masks with true labels, exact depth
  and pose (an upper bound). ``Detection.instance_id`` (gt mode only) is kept per map object
  as a diagnostic vote and never used for association, ids or answers. A ``detector`` hook
  (constructor argument or attribute: ``Observation -> list[objects.Detection]``) can replace
  the frame's detections; ConceptGraphs' filters apply to either, in the public code's
  order: ``filter_detections`` (most confident first: mask >= 0.001 H W, confidence >= 0.4, mask
  IoU > 0.9 with a kept one dropped, and of two whose box centres are closer than 20 px at 1280 px
  wide, scaled to the frame's width, the larger box kept) then ``filter_gobs`` (mask >= 25 px,
  2D box <= 0.5 of the image). Boxes are the masks' pixel bounding boxes.
  ``mask_subtract_contained`` is not applied (the simulated masks are eroded instance masks,
  disjoint except for false-positive blobs).
- CLIP features: the text embedding (``encoder``: MiniLM, or the ``gt_hash`` bag of label
  words) of the detection's description ``describe(label, attributes)`` from the detector's
  own guesses, e.g. "medium red ceramic mug" (a confused label or colour gives a different
  feature, as a different crop would). Matching, merging and the merged-feature rule are unchanged.
- GPT-4o prefilter: the seen classes whose name embedding has cosine >= ``prefilter_threshold``
  (0.2) with the query, best first, at most ``top_k_categories`` (10); snapshots are kept iff
  their classes meet that list and their class lists are cut to it, as in the paper.
- GPT-4o choice: kept snapshots ranked by the best cosine between the query and the
  descriptions of their (kept-class) objects; ties: the more recently seen object, then the
  newer frame. Frontiers are never returned by recall (a memory answers from what it saw).
  Class names and descriptions are embedded when they appear (ingest), so a recall makes one
  encoder call, for its own text.
- TSDF: a 2D grid of 0.1 m cells (see ``frontiers.py``): occupancy evidence from points at
  0.05-1.8 m height (+) and floor points / rays over the floor (-), explored from rays within
  1.7 m and 0.7 m around the agent, integration within 3 m (the TSDF's ``max_dist``). The
  explored window follows the public code, not its config: ``eval_*.yaml`` sets margins (0.6 H
  from the top, 0.25 W per side) and ``run_aeqa_evaluation.py`` passes them to
  ``TSDFPlanner.integrate``, which never reads them (its "narrow" view is the whole frustum
  within ``explored_depth``), so ``margin_h_ratio`` / ``margin_w_ratio`` default to 0 (set them
  to restore the window).
- Frontier snapshots: the frame id and the agent's pose turned towards the frontier (no image).
- Library stand-ins, same rules: Open3D ``voxel_down_sample`` -> a global 1 cm voxel grid with
  count-weighted voxel means (a merged detection is appended and compacted into the sorted
  voxels later, when the appended voxels reach half the cloud or the cloud is read: the same
  result as merging each in turn); ``cluster_dbscan``
  (~40 ms per 5000 points here) -> a grid DBSCAN (cells of eps/2, core = >= 10 points in the
  3x3x3 block, 26-connected, largest cluster kept unless < 5 points); faiss -> a scipy cKDTree
  per object, rebuilt once the voxels added since exceed half of it (means drift < 1 voxel);
  oriented boxes -> axis-aligned boxes padded by half a voxel (IoU > 0 <=> positive overlap);
  sklearn ``KMeans(n_init=10)`` (~16 ms a call) -> the same seeded k-means++ / Lloyd in numpy,
  memoised per input; HiPart's leaf choice -> the largest leaf, ties to the older leaf.
  ``compute_overlap_matrix`` in the periodic merge -> overlaps measured only where they decide
  something: a cheap upper bound first (the fraction in the box grown by 0.025 m, then in
  0.025 m cells next to the object's cells), exact only above 0.7; pairs with cosine <= 0.7
  only when some pair of the pass merges (only a merge changes a feature). Same merges.

Departures (and why)
--------------------
- Views: the paper takes 3 views per 1 m step; we treat every observation as a view.
  Snapshots are updated every frame.
- Frontiers are off by default (``track_frontiers: false``): they cost ~8-10 % of ingest and
  nothing reads them (recall answers from what was seen, and the evaluation never asks for a
  frontier). With the flag on they are recomputed every 3rd processed frame
  (``frontier_interval``: the paper's once per step of 3 views) and checkpointed.
- Candidate frames are bounded so memory stays flat on revisits: one per (0.5 m cell,
  30 degree heading bin), the newest replacing older ones; an older frame is kept while a
  snapshot uses it or it is the last frame that saw some object (so every object can always
  be clustered: the paper keeps every frame forever).
- Periodic cleanup touches only objects changed since the last pass (denoise is idempotent,
  and unchanged pairs were already tested for merging). A merged object's id is remapped to
  the keeper in frames and snapshots (the paper drops it from frames), and the keeper is
  re-clustered at the same step, so it stays in exactly one snapshot. Objects the denoise
  changed are re-clustered too (their centres moved; the paper re-clusters only new objects
  and those within 4 m of the agent).
- As in the paper, a re-clustered group may be added to an existing snapshot whose frame it
  picks; snapshots outside the update set are otherwise unchanged.
- Detections keep at most 5000 points (stride rounded up; the paper's floor stride may keep
  up to 9999). A detection merge grows the box to the union of both boxes.
- Dynamic scenes: 3D-Mem never removes an object that disappeared. An object the robot moved
  itself goes with the gripper (above); one moved otherwise, or grasped under a different map
  object (a duplicate), leaves a copy where it was seen.
- Our bookkeeping (not in the paper): per object votes of the detections' kinds and attributes
  (and, gt mode only, instance ids), first / last seen stamps, and the robot's own actions
  (``held``, the grasp point, ``moved_at``). Objects the robot carried are never dropped by
  the far-object filter (the robot held them: they are real).
- Frontiers: split parts under 20 cells are dropped and parts still wider than 150 degrees
  split again (so every kept frontier meets both limits); the old-frontier "unchanged" test
  (IoU > 0.95 and < 75 cells differ, or <= 3 differ) keeps ids and snapshots, the paper's
  split / merge special cases and ``adjust_navigation_point`` are left out. The island is the
  agent's free component only: the paper also unions the components holding existing
  frontiers (``get_island_around_pts`` at the occupancy height), which keeps a frontier alive
  when it is cut off from the agent (e.g. behind an obstacle seen later); we omit that union.
- Goals: ``final_observe_distance`` 1.0 m (paper: 0.75 A-EQA, 1.5 GOAT); "free" = free cells
  >= 0.3 m from occupied ones; at most 60 candidate cells are tried for a line of sight (the
  60 nearest the ideal point for one object, the 60 most opposite to the short axis for a
  group; the paper tries every cell of the ring), then the first candidate (one object) or the
  observation point (a group); for one object the candidates nearest the paper's point are
  also checked for a line of sight (as the paper does for groups), towards the agent
  (``query.near``, else the snapshot's pose) when the object stands in the open. In
  ``locate`` a snapshot goal farther than 1.5 m from the target object falls back to the
  one-object rule for it; an entity the map never kept but the diary knows gets a hit at the
  diary's pose.
- Bad input: ``observe`` runs ``Observation.validate()`` first, so a frame changed after
  construction into a bad one raises ``ValueError`` before anything is stored. A frame with no
  valid depth is skipped for geometry (still counted as seen, its events still inferred and
  recorded in the diary); a frame with no detections still updates the occupancy map.
  Geometry no back-projection can take is refused at the door too (``ValueError`` naming the
  field): intrinsics whose image edge lies more than 89.4 degrees off the optical axis (edge
  offset over 100 focal lengths: a tiny ``fx`` / ``fy`` or a principal point far outside the
  image) and a pose or camera mount beyond +-10 km (the range of the voxel keys). Depth
  returns that land beyond that range are dropped as no return; in the occupancy map, points
  farther than 2 x ``max_integrate_depth`` from the camera in plan are not integrated (points
  outside a TSDF volume; only rays more than 60 degrees off axis get that far), and the grid
  grows to hold every integrated point and ray.
- All or nothing: ``observe`` journals the frame's changes (``state.Journal``): a map object
  is copied (sharing its arrays, which are only ever replaced) before its first change in the
  frame, including a compaction a read triggers; new objects, frames, snapshots and bins are
  removed and removed ones put back in their dict order; the holder sets are journaled by
  membership; the grids are replaced by ``integrate``, never changed in place, so the old
  arrays are the undo; frontiers, counters, the text cache and the gate keep a token; the
  diary rolls back with ``ActionDiary.mark`` and the entries a merge renamed in place are
  put back. If anything raises, the memory is exactly as before (checkpoint bytes, stats and
  answers), and taking the same frame again gives what a memory that never failed holds. It
  costs ~3 % of ingest (per change, not per size of the memory).
- Checkpoints record the configuration: ``load`` refuses one made with another
  configuration or encoder (``load_manifest(..., config=self.config)``).
- Read caches (exact; the paper has no cost model): the catalog per state, its entries per
  object state (votes, box, flags); goal points (``observe_point_single`` / ``_group``), the
  free-space route graph and the routes from each start cell per grid (the ``_stand_cache``
  tuple, put back with the grid when a frame fails). A new frame's grid starts an empty store,
  so a robot that keeps seeing pays for the goals of the objects it is asked about again
  (live recall); a robot asked while standing still reads them once.
"""

from embodied_mem.memory.snapshots3d.system import Snapshots3D, Snapshots3DConfig

__all__ = ["Snapshots3D", "Snapshots3DConfig"]
