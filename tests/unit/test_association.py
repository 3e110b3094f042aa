"""The shared data-association rules (memory/association.py), each at its boundary."""

import numpy as np
import pytest

from embodied_mem.memory.association import EntityTracker, TrackerConfig
from embodied_mem.memory.base import InstanceView
from embodied_mem.types import Event, Pose


def view(xyz, label="mug", kind="object", half=0.05, instance_id=None):
    xyz = np.asarray(xyz, dtype=float)
    return InstanceView(instance_id, label, {"kind": kind, "color": "red"}, kind, 0.9, 100, xyz, xyz - half, xyz + half, 0.01)


def grasp(xyz, kind="grasp"):
    return Event(kind, 0.0, Pose.from_xy_yaw(0, 0, 0), Pose(np.asarray(xyz, float)))


def test_objects_join_within_the_radius_and_stay_apart_beyond_it():
    c = TrackerConfig()
    tracker = EntityTracker(c)
    (a,) = tracker.assign([view([0, 0, 0.8])], 0.0)
    (same,) = tracker.assign([view([c.object_radius - 0.01, 0, 0.8])], 1.0)
    assert same == a
    tracker = EntityTracker(c)
    (a,) = tracker.assign([view([0, 0, 0.8])], 0.0)
    (other,) = tracker.assign([view([c.object_radius + 0.05, 0, 0.8])], 1.0)
    assert other != a
    tracker = EntityTracker()  # the default, in metres a person would use: two mugs 0.45 m apart are two mugs
    assert len(set(tracker.assign([view([0, 0, 0.8]), view([0.45, 0, 0.8])], 0.0) + tracker.assign([view([0.44, 0, 0.8])], 1.0))) == 2


def test_the_documented_defaults():
    """memory/association.py's rules as documented (and mirrored in configs/memory/*.yaml)."""
    assert TrackerConfig() == TrackerConfig(object_radius=0.35, label_penalty=0.15, receptacle_margin=0.3, min_sightings=2, grasp_radius=0.6, surface_margin=0.25)


def test_a_disagreeing_label_costs_the_penalty():
    c = TrackerConfig()
    tracker = EntityTracker(c)
    (a,) = tracker.assign([view([0, 0, 0.8], "mug")], 0.0)
    tracker.assign([view([0, 0, 0.8], "mug")], 0.5)
    # inside the radius, but not once the label penalty is added
    (b,) = tracker.assign([view([c.object_radius - c.label_penalty + 0.05, 0, 0.8], "cup")], 1.0)
    assert b != a
    (c2,) = tracker.assign([view([0.02, 0, 0.8], "cup")], 2.0)  # close enough despite the confusion
    assert c2 == a and tracker.tracks[a].category == "mug"  # the majority holds


def test_one_track_takes_one_view_per_frame():
    tracker = EntityTracker()
    (a,) = tracker.assign([view([0, 0, 0.8])], 0.0)
    ids = tracker.assign([view([0.02, 0, 0.8]), view([0.05, 0, 0.8])], 1.0)
    assert ids[0] == a and ids[1] != a


def test_receptacles_join_inside_their_grown_box():
    c = TrackerConfig()
    tracker = EntityTracker(c)
    (a,) = tracker.assign([view([0, 0, 0.4], "table", "receptacle", half=0.5)], 0.0)
    (b,) = tracker.assign([view([0.5 + c.receptacle_margin - 0.05, 0, 0.4], "table", "receptacle", half=0.1)], 1.0)
    assert b == a
    (d,) = tracker.assign([view([3.0, 0, 0.4], "table", "receptacle", half=0.1)], 2.0)  # beyond the grown box
    assert d != a


def test_only_repeated_sightings_are_trusted():
    c = TrackerConfig()
    tracker = EntityTracker(c)
    (a,) = tracker.assign([view([0, 0, 0.8])], 0.0)
    assert a not in {t.track_id for t in tracker.confirmed()}
    for n in range(c.min_sightings - 1):
        tracker.assign([view([0, 0, 0.8])], 1.0 + n)
    assert a in {t.track_id for t in tracker.confirmed()}


def test_grasp_takes_the_nearest_object_within_reach_and_release_moves_it():
    c = TrackerConfig()
    tracker = EntityTracker(c)
    for n in range(2):
        table, near, far = tracker.assign(
            [view([0, 0, 0.4], "table", "receptacle", half=0.5), view([0.1, 0, 0.8]), view([0.3, 0.0, 0.8], "book")], float(n)
        )
    inference = tracker.infer(grasp([0.12, 0, 0.8]))
    assert inference.object_id == near and inference.receptacle_id == table and tracker.tracks[near].held
    assert tracker.infer(grasp([5.0, 5.0, 0.8])).object_id is None  # nothing within grasp_radius
    tracker.held = near
    released = tracker.infer(grasp([2.0, 1.0, 0.9], "release"))
    assert released.object_id == near and released.receptacle_id is None  # no known surface there
    assert np.allclose(tracker.tracks[near].position, [2.0, 1.0, 0.9]) and not tracker.tracks[near].held
    assert tracker.tracks[near].moved_at == 0.0


def test_grasp_reach_and_surface_margin_are_boundaries():
    c = TrackerConfig()
    tracker = EntityTracker(c)
    for n in range(2):
        tracker.assign([view([0, 0, 0.4], "table", "receptacle", half=0.5), view([0, 0, 0.8])], float(n))
    assert tracker.infer(grasp([c.grasp_radius + 0.05, 0, 0.8])).object_id is None
    assert tracker.surface_under(np.array([0.5 + c.surface_margin - 0.02, 0.0, 0.8])) is not None
    assert tracker.surface_under(np.array([0.5 + c.surface_margin + 0.05, 0.0, 0.8])) is None


def test_gt_views_keep_their_ids_and_rollback_restores_a_frame():
    tracker = EntityTracker()
    assert tracker.assign([view([0, 0, 0.8], instance_id=1007)], 0.0) == [1007]
    before = tracker.to_dict()
    tracker.begin()
    tracker.assign([view([0.01, 0, 0.8], instance_id=1007), view([3, 3, 0.8])], 1.0)
    tracker.infer(grasp([0.0, 0.0, 0.8]))
    tracker.rollback()
    assert tracker.to_dict() == before


@pytest.mark.parametrize("radius", [0.2, 0.5])
def test_the_radius_is_configurable(radius):
    tracker = EntityTracker(TrackerConfig(object_radius=radius))
    (a,) = tracker.assign([view([0, 0, 0.8])], 0.0)
    (b,) = tracker.assign([view([0.3, 0, 0.8])], 1.0)
    assert (a == b) == (radius > 0.3)
