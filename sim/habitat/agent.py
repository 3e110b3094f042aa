"""A habitat-lab ``Agent`` (``reset()`` / ``act(observations)``) around a memory and the project's agent.

For FindingDory's own harness (``findingdory/run_findingdory_eval.py``, a ``FindingDoryTask-v0``
env): while its oracle collects the history (``can_take_action`` = 0) every observation goes into
the memory (converted by ``observation_from_habitat``) and the action returned is ignored by the
task; when it may act, the agent asks the memory with the instruction (``lang_memory_goal``) and
answers as FindingDory's VLM agents do: a ``high_level_policy_action`` with ``nav_indices`` (the
history frames the memory names, FindingDory's step indices), their recorded ``nav_goal_states``
and ``nav_mode_flag`` (navigation mode: this camera never switches). FindingDory's measures then
score it (``high_level_goal_success`` and its ablations). Instance labels come from
``label_of(instance_id) -> (label, kind)`` the caller supplies (the scene's category maps);
``perception=gt`` keeps the panoptic ids, ``detector`` strips them (the seeded noise model runs
as in ``perception.py``).

No habitat import: it subclasses ``habitat.Agent`` when habitat-lab is there, else a stand-in.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from embodied_mem.agent import Agent as ProjectAgent
from embodied_mem.sim.embedded.perception import PerceptionConfig
from embodied_mem.sim.habitat.frames import body_pose_to_rep
from embodied_mem.sim.habitat.perception import HabitatPerception, HeadCamera, make_observation
from embodied_mem.types import Observation

try:  # habitat-lab's base class, for isinstance checks in its Benchmark
    from habitat import Agent as _HabitatAgent  # type: ignore
except Exception:  # noqa: BLE001

    class _HabitatAgent:  # type: ignore[no-redef]
        def reset(self) -> None:
            raise NotImplementedError

        def act(self, observations):
            raise NotImplementedError


def _coeffs(rotation) -> np.ndarray:
    """(x, y, z, w) of a habitat rotation (numpy-quaternion, magnum, or a sequence)."""
    if hasattr(rotation, "w") and hasattr(rotation, "x"):
        return np.array([rotation.x, rotation.y, rotation.z, rotation.w], dtype=np.float64)
    if hasattr(rotation, "vector") and hasattr(rotation, "scalar"):
        v = rotation.vector
        return np.array([v[0], v[1], v[2], rotation.scalar], dtype=np.float64)
    return np.asarray(rotation, dtype=np.float64).reshape(4)


def observation_from_habitat(observations: dict, frame_id: int, perception: HabitatPerception, head: HeadCamera, label_of: Callable[[int], tuple[str, str] | None], stamp: float) -> Observation:
    """A FindingDory observation dict -> ``Observation`` (keys ``head_rgb``, ``head_depth``,
    ``head_panoptic``, ``agent_state``)."""
    state = observations["agent_state"]
    position = getattr(state, "position", None)
    rotation = getattr(state, "rotation", None)
    if position is None:
        position, rotation = state["position"], state["rotation"]
    pose = body_pose_to_rep(np.asarray(position, dtype=np.float64), _coeffs(rotation))
    panoptic = np.asarray(observations["head_panoptic"])
    panoptic = panoptic[..., 0] if panoptic.ndim == 3 else panoptic
    labels = {}
    for instance_id in np.unique(panoptic):
        known = label_of(int(instance_id)) if instance_id > 0 else None
        if known is not None:
            labels[int(instance_id)] = (known[0], known[1], {})
    perception.set_labels(labels)
    return make_observation(perception, head.info(), observations["head_rgb"], observations["head_depth"], panoptic.astype(np.int64), pose, stamp, frame_id, 0, head)


class MemoryAgent(_HabitatAgent):
    """``reset()`` / ``act(observations)`` over any registered memory system."""

    def __init__(self, memory, label_of: Callable[[int], tuple[str, str] | None], perception: PerceptionConfig | None = None, head: HeadCamera | None = None, k: int = 5, seconds_per_step: float = 14.4) -> None:
        self.memory = memory
        self.label_of = label_of
        self.perception_config = perception or PerceptionConfig()
        self.head = head or HeadCamera()
        self.track = "language"
        self.agent = ProjectAgent()
        self.agent.config.k = k
        self.seconds_per_step = seconds_per_step
        self.reset()

    def reset(self) -> None:
        self.memory.reset()
        self.perception = HabitatPerception({}, self.perception_config, seed=0)
        self.frames = 0
        self.states: list = []
        self.answered = False

    def act(self, observations: dict) -> dict:
        if not int(np.asarray(observations.get("can_take_action", 0)).reshape(-1)[0]):
            obs = observation_from_habitat(observations, self.frames, self.perception, self.head, self.label_of, 6 * 3600.0 + self.frames * self.seconds_per_step)
            self.memory.observe(obs)
            self.states.append(observations["agent_state"])
            self.frames += 1
            return {"action": "empty_action", "action_args": {}}
        if self.answered:
            return {"action": "stop"}
        self.answered = True
        text = str(observations.get("lang_memory_goal", ""))
        # FindingDory's env hands the agent the text only: this is the language track.
        query = self.agent.make_query(text, None, "language", None)
        hits = self.agent.choose(self.memory.recall(query), 1, self.track)
        indices = [int(h.frame_id) for h in hits if h.frame_id is not None and 0 <= int(h.frame_id) < len(self.states)]
        if not indices:
            return {"action": "high_level_policy_action", "action_args": {"nav_indices": [-1], "nav_goal_states": [], "nav_mode_flag": []}}
        return {
            "action": "high_level_policy_action",
            "action_args": {"nav_indices": indices, "nav_goal_states": [self.states[i] for i in indices], "nav_mode_flag": [True] * len(indices)},
        }
