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
    assert TrackerConfig() == TrackerConfig(object_radius=0.35, label_penalty=0.15, receptacle_margin=0.3, min_sightings=2, grasp_radius=0.6, surface_margin=0.25, unconfirmed_ttl=600.0)
    for bad in ({"min_sightings": 0}, {"unconfirmed_ttl": -1.0}, {"unconfirmed_ttl": float("nan")}):
        with pytest.raises(ValueError):
            TrackerConfig(**bad)
    assert TrackerConfig(min_sightings=1, unconfirmed_ttl=0.0).min_sightings == 1  # the boundaries are allowed


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


def test_first_and_last_seen_are_the_stamps_of_the_first_and_latest_sightings():
    tracker = EntityTracker()
    (a,) = tracker.assign([view([0, 0, 0.8])], 3.0)
    for stamp in (4.0, 7.5):
        tracker.assign([view([0, 0, 0.8])], stamp)
    assert (tracker.tracks[a].first_seen, tracker.tracks[a].last_seen, tracker.tracks[a].sightings) == (3.0, 7.5, 3)


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


def test_a_false_positive_seen_once_decays_after_the_ttl():
    c = TrackerConfig()
    tracker = EntityTracker(c)
    (ghost,) = tracker.assign([view([0, 0, 0.8])], 0.0)
    far = view([5, 5, 0.8], "book")
    ids, _ = tracker.frame([far], [], c.unconfirmed_ttl)  # exactly the ttl: still waiting
    assert ghost in tracker.tracks and tracker.dropped == []
    ids, _ = tracker.frame([far], [], c.unconfirmed_ttl + 0.5)  # past it: gone, and said so
    assert ghost not in tracker.tracks and tracker.dropped == [ghost]
    assert ids[0] in {t.track_id for t in tracker.confirmed()}  # the book, seen in two frames
    ids, _ = tracker.frame([view([0, 0, 0.8])], [], c.unconfirmed_ttl + 1.0)  # seen there again: a new track
    assert ids[0] != ghost and tracker.dropped == []
    short = EntityTracker(TrackerConfig(unconfirmed_ttl=10.0))  # configurable
    (a,) = short.assign([view([0, 0, 0.8])], 0.0)
    short.frame([], [], 10.5)
    assert a not in short.tracks


def test_a_real_object_seen_in_two_frames_is_kept_forever_and_one_frame_counts_once():
    c = TrackerConfig()
    tracker = EntityTracker(c)
    (real,) = tracker.assign([view([0, 0, 0.8])], 0.0)
    tracker.assign([view([0.01, 0, 0.8])], 1.0)
    tracker.frame([], [], 1e7)
    assert real in {t.track_id for t in tracker.confirmed()} and tracker.dropped == []
    # gt perception: two detections of one instance in one frame are one sighting, not two
    gt = EntityTracker(c)
    gt.assign([view([0, 0, 0.8], instance_id=7), view([0.02, 0, 0.8], instance_id=7)], 0.0)
    assert gt.tracks[7].sightings == 1 and gt.tracks[7].count == 2 and 7 not in {t.track_id for t in gt.confirmed()}
    gt.frame([], [], c.unconfirmed_ttl + 1.0)
    assert 7 not in gt.tracks
    # what the robot holds or moved is never dropped, however briefly it was seen
    moved = EntityTracker(c)
    (held,) = moved.assign([view([0, 0, 0.8])], 0.0)
    moved.infer(grasp([0, 0, 0.8]))
    moved.frame([], [], 2 * c.unconfirmed_ttl)
    assert held in moved.tracks
    moved.infer(grasp([1, 0, 0.8], "release"))
    moved.frame([], [], 4 * c.unconfirmed_ttl)
    assert held in moved.tracks and held in {t.track_id for t in moved.confirmed()}


def test_rollback_restores_a_dropped_track_in_its_place():
    c = TrackerConfig()
    tracker = EntityTracker(c)
    first, ghost, last = tracker.assign([view([0, 0, 0.8]), view([2, 0, 0.8]), view([4, 0, 0.8])], 0.0)
    tracker.assign([view([0, 0, 0.8]), view([4, 0, 0.8])], 1.0)  # the middle one was seen once
    tracker.frame([], [], 2.0)
    before = tracker.to_dict()
    tracker.begin()
    tracker.frame([view([6, 0, 0.8])], [], c.unconfirmed_ttl + 5.0)
    assert tracker.dropped == [ghost] and ghost not in tracker.tracks
    tracker.rollback()
    assert tracker.to_dict() == before and list(tracker.tracks) == [first, ghost, last] and tracker.dropped == []
    tracker.begin()
    tracker.frame([], [], c.unconfirmed_ttl + 5.0)
    tracker.commit()
    assert list(tracker.tracks) == [first, last]


def test_a_released_object_restarts_its_mean_at_the_release_point_and_held_or_other_kinds_take_nothing():
    tracker = EntityTracker()
    (mug,) = tracker.assign([view([0, 0, 0.8])], 0.0)
    tracker.assign([view([0, 0, 0.8])], 1.0)
    tracker.infer(grasp([0, 0, 0.8]))
    (other,) = tracker.assign([view([0, 0, 0.8])], 2.0)  # a held track takes no sighting
    assert other != mug and tracker.tracks[mug].count == 2
    tracker.infer(grasp([2.0, 0, 0.8], "release"))
    tracker.assign([view([2.2, 0, 0.8])], 3.0)  # the release point counts as one sighting
    assert np.allclose(tracker.tracks[mug].position, [2.1, 0, 0.8]) and tracker.tracks[mug].count == 2
    (table,) = tracker.assign([view([2.1, 0, 0.8], "mug", "receptacle")], 4.0)  # another kind never joins
    assert table not in (mug, other) and tracker.tracks[table].kind == "receptacle"
