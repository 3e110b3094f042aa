"""The Habitat adapter: FindingDory's own episodes in habitat-sim / habitat-lab (GPU machines).

What FindingDory does (``findingdory-benchmark/findingdory-habitat``, habitat-sim 0.3.1 and its
habitat-lab 0.3.1 fork): a Stretch robot in an HSSD home; a scripted oracle rearranges the
episode's candidate objects (its history, up to 4000 steps); then one of the episode's
instructions is given, whose ``goal_expr`` (a PDDL logical expression over entity properties) is
checked with ``robot_at_object`` / ``robot_at_receptacle`` / ``robot_in_room`` at the agent's
stops, receptacles against their precomputed viewpoints.

What this package does, module by module (none imports habitat except ``backend.py``):

- ``frames.py``: Habitat (y up, -z forward; camera x right, y up) <-> REP-103 (x forward, y left,
  z up; optical z forward, x right, y down), poses, quaternions, intrinsics, depth.
- ``dataset.py``: FindingDory's episode files (``episodes.json.gz``, ``viewpoints.npy``,
  ``transformations.npy``), from paths the user gives; nothing is downloaded.
- ``goal_expr.py``: ``goal_expr`` -> AST -> grounded on the entities (FindingDory's
  ``expand_quantifiers``) -> evaluated with its sequential rules.
- ``entities.py``: the entities and their properties after the history (FindingDory's names).
- ``tasks.py``: instructions -> the project's ``Task`` (goals for ``sim/tasks/success.py``,
  text with its placeholders filled, constraints for the oracle track, keyframes).
- ``oracle.py``: the ``SuccessOracle`` (geodesics to viewpoints / snapped positions, bearings,
  panoptic visibility, regions) over a backend.
- ``perception.py``: head camera, panoptic -> ``Detection``s, the ``detector`` / ``gt`` modes.
- ``navigator.py``, ``env.py``, ``robot.py``: navmesh driving, the robot and clock, the oracle's
  collection run recorded as a ``History``.
- ``backend.py``: habitat-sim itself. ``episode.py``: ``HabitatEpisode``, the runner's interface.
- ``agent.py``: a habitat-lab ``Agent`` (``reset`` / ``act``) for FindingDory's own harness.

Substitutions and departures (each says why; details in the modules):

- Stretch's articulated URDF is not loaded: a habitat-sim agent of its size carries the head
  camera at FindingDory's numbers (480 x 640, hfov 43, 1.31 m, tilted 30 degrees down); there is
  no manipulation mode (no -pi/2 heading offset, no camera pan), pick and place are magic
  (FindingDory's heuristic arm policies need the URDF and its controllers).
- Placed objects are dropped onto the surface below the goal receptacle's position, not where
  FindingDory's place policy lowered them.
- Only the episode's candidate objects / receptacles and the scene's regions are entities
  (the ones tasks target); FindingDory also registers other scene objects of known categories.
- Perception: the embedded detector noise model runs unchanged on Habitat's panoptic masks;
  false-positive labels come from the episode's categories, and categories outside the
  embedded confusion groups are never confused.
- Task categories come from ``task_type`` (FindingDory's category table was not readable).
- Single-floor geodesics: the protocol's x, y are lifted to the start floor's height.
"""
