"""Property tests: every registered memory refuses bad input with a ValueError that names the
field, and is exactly as it was afterwards (stats and answers)."""

import copy
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embodied_mem.registry import build, config_class, names
from embodied_mem.types import Detection, Pose, Query

# field -> (bad values, what the error must name)
BAD_FIELDS = {
    "stamp": ([math.nan, math.inf, -math.inf, "noon", None], "Observation.stamp"),
    "frame_id": ([-1, "x", 1.5, None, True], "Observation.frame_id"),
    "day": ([-1, "monday", None, 2.5], "Observation.day"),
    "pose": ([None, "here", (0.0, 0.0, 0.0)], "Observation.pose"),
    "camera": ([None, "head"], "Observation.camera"),
    "rgb": (["float", "gray", "empty", "small", None], r"Observation\.(rgb|depth shape)"),  # a smaller rgb: the pair mismatches
    "depth": (["double", "small", "negative", "3d", None], "Observation.depth"),
    "detections": ([None, "mug", ["mug"], "small_mask"], "Observation.detections"),
    "events": ([None, "grasp", [("grasp", 1.0)]], "Observation.events"),
}


def spoil(obs, field, value):
    """Set ``field`` to a bad value AFTER construction (dataclasses do not re-validate)."""
    bad = copy.copy(obs)
    bad.detections, bad.events = list(obs.detections), list(obs.events)
    h, w = obs.rgb.shape[:2]
    images = {
        ("rgb", "float"): obs.rgb.astype(np.float32),
        ("rgb", "gray"): obs.rgb[..., 0],
        ("rgb", "empty"): np.zeros((0, w, 3), np.uint8),
        ("rgb", "small"): obs.rgb[: h // 2],
        ("depth", "double"): obs.depth.astype(np.float64),
        ("depth", "small"): obs.depth[: h // 2],
        ("depth", "negative"): -np.abs(obs.depth) - 1.0,
        ("depth", "3d"): obs.depth[..., None],
        ("detections", "small_mask"): [Detection("mug", np.ones((h // 2, w), bool))],
    }
    setattr(bad, field, images.get((field, value), value) if isinstance(value, str) else value)
    return bad


def structured(near):
    return Query("go", near=near, constraints={"goals": [{"target": "object", "day": 0, "interacted": True, "select": {"by": "order", "index": 0}}], "ordered": False})


def answers(memory, near):
    out = []
    for query in (structured(near), Query("the table in the kitchen")):
        out.append([(h.frame_id, h.object_id, round(h.score, 9)) for h in memory.recall(query).hits])
    return out


def fed(name, observations):
    options = {"name": name}
    if "encoder" in {f for f in config_class("memory", name).__dataclass_fields__}:
        options["encoder"] = "gt_hash"
    memory = build("memory", options)
    for obs in observations:
        memory.observe(obs)
    return memory


@pytest.fixture(scope="module")
def memories(one_day):
    stream = one_day.observations[:60]
    memories = {name: fed(name, stream) for name in names("memory")}
    near = one_day.observations[59].pose
    for memory in memories.values():  # a first recall may build lazy indexes (Mem4Nav): settle them
        answers(memory, near)
    return memories


BAD_CONSTRAINTS = [
    ({"goals": [{"target": "object", "select": "farthest"}]}, "constraints.goals[0].select"),
    ({"goals": [{"target": "object"}], "orderd": True}, "unknown key(s) ['orderd']"),
    ({"goals": [{"target": "room", "select": {"by": "room", "property": "best"}}]}, "constraints.goals[0].select.property"),
    ({"goals": [{"target": "object", "select": {"by": "duration", "seconds": "long"}}]}, "constraints.goals[0].select.seconds"),
    ({"goals": [{"target": "object", "select": {"by": "order"}}]}, "needs 'index'"),
    ({"goals": [{"target": "thing"}]}, "constraints.goals[0].target"),
    ({"goals": [{"target": "object", "day": "yesterday"}]}, "constraints.goals[0].day"),
    ({"goals": [{"target": "object", "related": {"colour": "red"}}]}, "constraints.goals[0].related"),
    ({"goals": [{"target": "receptacle", "role": "middle"}]}, "constraints.goals[0].role"),
    ({"goals": [{"target": "object", "attributes": {"color": 3}}]}, "constraints.goals[0].attributes"),
    ({"goals": [{"target": "object", "select": {"by": "time", "minute": 5000}}]}, "constraints.goals[0].select.minute"),
    ({"goals": [{"target": "object", "select": {"by": "room", "property": "initial"}}]}, "does not select a object"),
    ({"goals": []}, "constraints.goals"),
    ({"goals": [{"target": "object"}], "ordered": "yes"}, "constraints.ordered"),
    ([{"target": "object"}], "constraints must be a dict"),  # refused by Query itself
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bad_observations_are_refused_by_name_and_change_nothing(memories, one_day, data):
    name = data.draw(st.sampled_from(sorted(memories)))
    field = data.draw(st.sampled_from(sorted(BAD_FIELDS)))
    values, message = BAD_FIELDS[field]
    value = data.draw(st.sampled_from(values))
    memory = memories[name]
    near = one_day.observations[59].pose
    before_stats, before = memory.stats(), answers(memory, near)
    source = one_day.observations[60 + data.draw(st.integers(0, 20))]
    with pytest.raises(ValueError, match=message if "\\" in message else message.replace(".", r"\.")):
        memory.observe(spoil(source, field, value))
    assert memory.stats() == before_stats, (name, field, value)
    assert answers(memory, near) == before, (name, field, value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bad_queries_are_refused_by_name_and_change_nothing(memories, one_day, data):
    name = data.draw(st.sampled_from(sorted(memories)))
    memory = memories[name]
    near = one_day.observations[59].pose
    before_stats, before = memory.stats(), answers(memory, near)
    kind = data.draw(st.sampled_from(["constraints", "text", "k", "time_range", "near"]))
    if kind == "constraints":
        constraints, message = data.draw(st.sampled_from(BAD_CONSTRAINTS))
        with pytest.raises(ValueError, match=re_escape(message)):
            memory.recall(Query("go", near=near, constraints=constraints))
    else:
        bad = {"text": (7, "Query.text"), "k": (data.draw(st.sampled_from([0, -3, "5", True])), "Query.k"),
               "time_range": (data.draw(st.sampled_from([(1.0, 2.0, 3.0), ("a", 1.0), (5.0, 1.0), 4.0])), "Query.time_range"),
               "near": ("kitchen", "Query.near")}[kind]
        with pytest.raises(ValueError, match=re_escape(bad[1])):
            memory.recall(Query(**{"text": "go", kind: bad[0]}))
    assert memory.stats() == before_stats
    assert answers(memory, near) == before


def re_escape(text):
    import re

    return re.escape(text)


def test_a_pose_made_bad_after_construction_is_caught_where_it_enters():
    with pytest.raises(ValueError, match="Pose.position"):
        Pose([0.0, math.nan, 0.0])
