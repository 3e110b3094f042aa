"""FindingDory's episode files, parsed without Habitat (``findingdory/dataset/findingdory_dataset.py``).

A split is three files the user downloads once (FindingDory's ``download_data.sh``; nothing is
fetched here): ``episodes.json.gz`` (or ``.json``), ``viewpoints.npy`` and ``transformations.npy``.

- ``episodes``: ``FindingDoryEpisode`` dicts (a habitat-lab ``RearrangeEpisode`` plus
  ``candidate_objects``, ``candidate_start_receps``, ``candidate_goal_receps``, each with a
  ``*_noninteracted`` twin; ``instructions``; ``place_valid_receps``; ``nav_goal_pos`` /
  ``nav_goal_rot``). Candidates are habitat ``ObjectGoal`` dicts whose ``view_points`` are
  indices into ``viewpoints.npy`` (or, in files without that matrix, inline
  ``{"agent_state": {"position", "rotation"}, "iou"}`` dicts).
- ``viewpoints.npy``: one row per viewpoint, ``[position(3), rotation(4: x, y, z, w), iou(1)]``
  in Habitat's world frame.
- ``transformations.npy``: ``rigid_objs[i] = [template, index]``; row ``index`` is the 3x4
  top of the object's 4x4 ``world_T_object`` (Habitat frame).
- ``instructions``: a dict ``id -> InstructionInfo`` (``task_id``, ``lang``, ``task_type``,
  ``goal_expr``, ``sampled_objects``, ``sampled_receps``, ``sequential_goals``,
  ``temporal_target_entity``).

Entity names follow FindingDory's simulator: a rigid object is ``<template stem>_:<NNNN>``
(NNNN counts earlier copies of the template, candidates first, then the other objects in file
order, ``FindingDorySim._add_objs``); a candidate object's index is matched to its copy by
position (1e-5, as there). Receptacles keep their ``object_name`` (``<asset handle>|<surface>``);
rooms are ``region_<id>`` (the simulator's regions, added by the backend).
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embodied_mem.sim.habitat.frames import body_pose_to_rep, point_to_rep
from embodied_mem.types import Pose

GOAL_LISTS = (
    "candidate_objects",
    "candidate_objects_noninteracted",
    "candidate_start_receps",
    "candidate_start_receps_noninteracted",
    "candidate_goal_receps",
    "candidate_goal_receps_noninteracted",
)


@dataclass
class ViewPoint:
    """One precomputed viewpoint: Habitat position / rotation (x, y, z, w), the target's IoU,
    and the REP pose of the robot's base there."""

    position_hab: np.ndarray
    rotation_hab: np.ndarray
    iou: float

    @property
    def pose(self) -> Pose:
        return body_pose_to_rep(self.position_hab, self.rotation_hab)


@dataclass
class Candidate:
    """A candidate object or receptacle (habitat ``ObjectGoal``)."""

    object_name: str
    object_category: str
    position_hab: np.ndarray
    object_id: str | None = None
    view_points: list[ViewPoint] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def position(self) -> np.ndarray:
        """REP world position."""
        return point_to_rep(self.position_hab)


@dataclass
class Instruction:
    """``InstructionInfo``: one task of an episode."""

    key: str
    task_id: str
    lang: str
    task_type: str
    goal_expr: Any
    sampled_objects: list = field(default_factory=list)
    sampled_receps: list = field(default_factory=list)
    sequential_goals: dict | None = None
    temporal_target_entity: str | None = None


@dataclass
class RigidObject:
    template: str
    handle: str  # the simulator's name: <template stem>_:<NNNN>
    matrix_hab: np.ndarray  # 4x4 world_T_object, Habitat frame

    @property
    def position(self) -> np.ndarray:
        return point_to_rep(self.matrix_hab[:3, 3])


@dataclass
class FindingDoryEpisode:
    episode_id: str
    scene_id: str
    scene_dataset_config: str
    start_position_hab: np.ndarray
    start_rotation_hab: np.ndarray
    rigid_objects: list[RigidObject]
    candidates: dict[str, list[Candidate]]
    instructions: list[Instruction]
    target_receptacles: list[str]  # start receptacle name of candidate object i
    goal_receptacles: list[str]  # goal receptacle name of candidate object i
    name_to_receptacle: dict[str, str]
    place_valid_receps: dict[str, int] | None
    nav_goal_position_hab: np.ndarray | None
    nav_goal_rotation_hab: np.ndarray | None
    candidate_handles: dict[int, str]  # candidate object index -> rigid handle
    noninteracted_handles: dict[int, str]
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def start_pose(self) -> Pose:
        return body_pose_to_rep(self.start_position_hab, self.start_rotation_hab)

    @property
    def nav_goal_pose(self) -> Pose | None:
        if self.nav_goal_position_hab is None or self.nav_goal_rotation_hab is None:
            return None
        return body_pose_to_rep(self.nav_goal_position_hab, self.nav_goal_rotation_hab)

    def goal_receptacle_of(self, index: int) -> Candidate:
        """The candidate goal receptacle object ``index`` is placed on."""
        return _by_name(self.candidates["candidate_goal_receps"], self.goal_receptacles[index], "goal receptacle")

    def start_receptacle_of(self, index: int) -> Candidate:
        name = self.name_to_receptacle.get(self.candidate_handles.get(index, ""), self.target_receptacles[index])
        return _by_name(self.candidates["candidate_start_receps"], name, "start receptacle")


def _by_name(candidates: list[Candidate], name: str, what: str) -> Candidate:
    for candidate in candidates:
        if candidate.object_name == name:
            return candidate
    raise ValueError(f"{what} {name!r} is not among the episode's candidates")


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"FindingDory episodes file {str(path)!r} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError, EOFError) as error:
        raise ValueError(f"cannot read FindingDory episodes {str(path)!r}: {error}") from error


def _matrix(path: str | Path | None, width: int, name: str) -> np.ndarray | None:
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name} {str(path)!r} does not exist")
    array = np.load(path, allow_pickle=False)
    if array.size == 0:
        return None
    array = np.asarray(array, dtype=np.float64)
    if name == "transformations":
        array = array.reshape(len(array), -1)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"{name} {str(path)!r} must have rows of {width} numbers, got shape {array.shape}")
    return array


def _vector(value, size: int, name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.shape != (size,) or not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be {size} finite numbers, got {value!r}")
    return array


def _viewpoint(view, viewpoints: np.ndarray | None, where: str) -> ViewPoint:
    if isinstance(view, (int, np.integer)) and not isinstance(view, bool):
        if viewpoints is None:
            raise ValueError(f"{where}: viewpoint index {view} but no viewpoints.npy was given")
        if not 0 <= view < len(viewpoints):
            raise ValueError(f"{where}: viewpoint index {view} outside viewpoints.npy ({len(viewpoints)} rows)")
        row = viewpoints[int(view)]
        return ViewPoint(row[:3].copy(), row[3:7].copy(), float(row[7]))
    if isinstance(view, dict) and "agent_state" in view:
        state = view["agent_state"]
        return ViewPoint(_vector(state["position"], 3, where), _vector(state["rotation"], 4, where), float(view.get("iou", 0.0)))
    raise ValueError(f"{where}: a viewpoint must be an index into viewpoints.npy or an agent_state dict, got {view!r}")


def _candidate(data: dict, viewpoints, where: str) -> Candidate:
    try:
        name, category = str(data["object_name"]), str(data.get("object_category") or "")
        position = _vector(data["position"], 3, f"{where}.position")
    except KeyError as error:
        raise ValueError(f"{where}: missing {error}") from error
    views = [_viewpoint(v, viewpoints, f"{where}.view_points[{i}]") for i, v in enumerate(data.get("view_points") or [])]
    known = {"object_name", "object_category", "position", "view_points", "object_id"}
    extra = {k: v for k, v in data.items() if k not in known}
    object_id = None if data.get("object_id") is None else str(data["object_id"])
    return Candidate(name, category, position, object_id, views, extra)


def _instructions(raw, where: str) -> list[Instruction]:
    if raw is None:
        return []
    items = raw.items() if isinstance(raw, dict) else enumerate(raw)
    out = []
    for key, data in items:
        if not isinstance(data, dict) or "goal_expr" not in data:
            raise ValueError(f"{where}.instructions[{key!r}] must be an InstructionInfo dict with a goal_expr")
        sequential = data.get("sequential_goals")
        if sequential is not None and not isinstance(sequential, dict):
            raise ValueError(f"{where}.instructions[{key!r}].sequential_goals must be a dict or null")
        out.append(
            Instruction(
                key=str(key),
                task_id=str(data.get("task_id", key)),
                lang=str(data.get("lang", "")),
                task_type=str(data.get("task_type", "")),
                goal_expr=data["goal_expr"],
                sampled_objects=list(data.get("sampled_objects") or []),
                sampled_receps=list(data.get("sampled_receps") or []),
                sequential_goals=sequential,
                temporal_target_entity=data.get("temporal_target_entity"),
            )
        )
    return out


def _rigid_objects(raw: list, transformations: np.ndarray | None, candidate_names: list[str], where: str) -> list[RigidObject]:
    """The scene's rigid objects with FindingDory's handles: candidates first (as its sim adds them)."""
    entries = []
    for index, item in enumerate(raw or []):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ValueError(f"{where}.rigid_objs[{index}] must be [template, transform], got {item!r}")
        template, transform = item
        if isinstance(transform, (int, np.integer)) and not isinstance(transform, bool):
            if transformations is None or not 0 <= transform < len(transformations):
                raise ValueError(f"{where}.rigid_objs[{index}]: transformation index {transform} without a matching transformations.npy row")
            top = transformations[int(transform)].reshape(-1)
            matrix = np.vstack([top[:12].reshape(3, 4), [0.0, 0.0, 0.0, 1.0]])
        else:
            matrix = np.asarray(transform, dtype=np.float64)
            if matrix.shape == (3, 4):
                matrix = np.vstack([matrix, [0.0, 0.0, 0.0, 1.0]])
            if matrix.shape != (4, 4):
                raise ValueError(f"{where}.rigid_objs[{index}]: a transform must be 4x4, got {matrix.shape}")
        entries.append((str(template), matrix))
    ordered = [e for e in entries if e[0] in candidate_names] + [e for e in entries if e[0] not in candidate_names]
    counts: dict[str, int] = defaultdict(int)
    objects = []
    for template, matrix in ordered:
        handle = f"{template.split('.')[0]}_:{counts[template]:04d}"
        counts[template] += 1
        objects.append(RigidObject(template, handle, matrix))
    return objects


def _match_candidates(candidates: list[Candidate], objects: list[RigidObject]) -> dict[int, str]:
    """Candidate index -> rigid handle, matched by template name and position (as FindingDory)."""
    out: dict[int, str] = {}
    taken: set[str] = set()
    for index, candidate in enumerate(candidates):
        for obj in objects:
            if obj.template == candidate.object_name and obj.handle not in taken and np.allclose(obj.matrix_hab[:3, 3], candidate.position_hab, atol=1e-5):
                out[index] = obj.handle
                taken.add(obj.handle)
                break
        else:
            # Files without rigid_objs (or a moved copy): name the candidate after its template.
            stem = candidate.object_name.split(".")[0]
            handle = next(f"{stem}_:{n:04d}" for n in range(10_000) if f"{stem}_:{n:04d}" not in taken)
            out[index] = handle
            taken.add(handle)
    return out


def _names(pairs, where: str) -> list[str]:
    out = []
    for index, item in enumerate(pairs or []):
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, (list, tuple)) and item and isinstance(item[0], str):
            out.append(item[0])
        else:
            raise ValueError(f"{where}[{index}] must be a receptacle name or [name, ...], got {item!r}")
    return out


def parse_episode(data: dict, viewpoints: np.ndarray | None = None, transformations: np.ndarray | None = None) -> FindingDoryEpisode:
    """One ``FindingDoryEpisode`` dict -> ``FindingDoryEpisode``; ``ValueError`` names what is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"an episode must be a dict, got {type(data).__name__}")
    where = f"episode {data.get('episode_id', '?')}"
    for key in ("episode_id", "scene_id"):
        if key not in data:
            raise ValueError(f"{where}: missing {key!r}")
    candidates = {key: [_candidate(c, viewpoints, f"{where}.{key}[{i}]") for i, c in enumerate(data.get(key) or [])] for key in GOAL_LISTS}
    objects = _rigid_objects(data.get("rigid_objs"), transformations, [c.object_name for c in candidates["candidate_objects"]], where)
    nav_pos, nav_rot = data.get("nav_goal_pos"), data.get("nav_goal_rot")
    if isinstance(nav_pos, dict):  # a serialised NavigationGoal
        nav_pos = nav_pos.get("position")
    episode = FindingDoryEpisode(
        episode_id=str(data["episode_id"]),
        scene_id=str(data["scene_id"]),
        scene_dataset_config=str(data.get("scene_dataset_config", "")),
        start_position_hab=_vector(data.get("start_position", [0.0, 0.0, 0.0]), 3, f"{where}.start_position"),
        start_rotation_hab=_vector(data.get("start_rotation", [0.0, 0.0, 0.0, 1.0]), 4, f"{where}.start_rotation"),
        rigid_objects=objects,
        candidates=candidates,
        instructions=_instructions(data.get("instructions"), where),
        target_receptacles=_names(data.get("target_receptacles"), f"{where}.target_receptacles"),
        goal_receptacles=_names(data.get("goal_receptacles"), f"{where}.goal_receptacles"),
        name_to_receptacle={str(k): str(v) for k, v in (data.get("name_to_receptacle") or {}).items()},
        place_valid_receps={str(k): (None if v is None else int(v)) for k, v in data["place_valid_receps"].items()} if data.get("place_valid_receps") else None,
        nav_goal_position_hab=None if nav_pos is None else _vector(nav_pos, 3, f"{where}.nav_goal_pos"),
        nav_goal_rotation_hab=None if nav_rot is None else _vector(nav_rot, 4, f"{where}.nav_goal_rot"),
        candidate_handles=_match_candidates(candidates["candidate_objects"], objects),
        noninteracted_handles=_match_candidates(candidates["candidate_objects_noninteracted"], objects),
        raw=data,
    )
    count = len(candidates["candidate_objects"])
    if len(episode.goal_receptacles) != count or len(episode.target_receptacles) not in (0, count):
        raise ValueError(
            f"{where}: {count} candidate objects but {len(episode.target_receptacles)} target_receptacles and "
            f"{len(episode.goal_receptacles)} goal_receptacles (one each per candidate object)"
        )
    return episode


@dataclass
class EpisodeSet:
    episodes: list[FindingDoryEpisode]
    categories: dict[str, dict[str, int]]  # obj / recep / other category -> id maps of the file


def load_episodes(
    episodes_path: str | Path,
    viewpoints_path: str | Path | None = None,
    transformations_path: str | Path | None = None,
    episode_ids: list | None = None,
    start: int = 0,
    count: int | None = None,
) -> EpisodeSet:
    """Read a split from the user's paths. ``viewpoints_path`` / ``transformations_path``
    default to ``viewpoints.npy`` / ``transformations.npy`` beside the episodes file when they
    exist. ``episode_ids`` (else ``start`` and ``count``) choose the episodes, as
    FindingDory's ``episode_ids`` / ``episode_indices_range``."""
    episodes_path = Path(episodes_path)
    folder = episodes_path.parent
    if viewpoints_path is None and (folder / "viewpoints.npy").is_file():
        viewpoints_path = folder / "viewpoints.npy"
    if transformations_path is None and (folder / "transformations.npy").is_file():
        transformations_path = folder / "transformations.npy"
    data = read_json(episodes_path)
    if not isinstance(data, dict) or not isinstance(data.get("episodes"), list):
        raise ValueError(f"{str(episodes_path)!r} must hold {{'episodes': [...]}}")
    viewpoints = _matrix(viewpoints_path, 8, "viewpoints")
    transformations = _matrix(transformations_path, 12, "transformations")
    raw = data["episodes"]
    if episode_ids is not None:
        wanted = [str(i) for i in episode_ids]
        by_id = {str(e.get("episode_id")): e for e in raw}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise ValueError(f"episode id(s) {missing} are not in {str(episodes_path)!r}")
        raw = [by_id[i] for i in wanted]
    else:
        if start < 0:
            raise ValueError(f"habitat.start must be >= 0, got {start}")
        raw = raw[start : None if count is None else start + count]
    categories = {k: dict(data[k]) for k in ("obj_category_to_obj_category_id", "recep_category_to_recep_category_id", "other_obj_category_to_other_obj_category_id") if isinstance(data.get(k), dict)}
    return EpisodeSet([parse_episode(e, viewpoints, transformations) for e in raw], categories)


def read_attributes(path: str | Path | None) -> dict[str, dict[str, str]]:
    """FindingDory's ``object_attribute_annotation.csv``: asset name -> {attribute: value}."""
    if path is None:
        return {}
    import csv

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"object attribute file {str(path)!r} does not exist")
    out: dict[str, dict[str, str]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            name = row.pop("object_name", None)
            if name:
                out[name] = {k: str(v) for k, v in row.items() if k}
    return out
