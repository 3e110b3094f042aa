import math

import numpy as np

from embodied_mem.sim.tasks.success import DEFAULT, DTG, SEM_COV, TargetGoal, Thresholds, evaluate_stops, goal_satisfied, shortest_multi_goal, spl
from embodied_mem.types import Pose


class FakeOracle:
    """Goal i is satisfied exactly at x == i (entity ids are the x positions)."""

    def geodesic_to_entity(self, xy, entity_id):
        return 0.0 if round(xy[0]) == entity_id else 99.0

    def bearing(self, pose, entity_id):
        return 0.0

    def visible_fraction(self, pose, entity_id):
        return 0.5

    def room_of(self, xy):
        return "kitchen" if xy[0] < 0 else "hall"


def at(x):
    return Pose.from_xy_yaw(float(x), 0.0, 0.0)


def test_sequential_semantics():
    oracle = FakeOracle()
    goals = [TargetGoal("receptacle", [1]), TargetGoal("receptacle", [2])]
    assert evaluate_stops(oracle, goals, ordered=True, stops=[at(1), at(2)])
    assert not evaluate_stops(oracle, goals, ordered=True, stops=[at(2), at(1)])  # out of order: false for good
    assert evaluate_stops(oracle, goals, ordered=False, stops=[at(2), at(1)])
    assert not evaluate_stops(oracle, goals, ordered=False, stops=[at(1), at(1), at(2)])  # a stop with nothing new
    assert not evaluate_stops(oracle, goals, ordered=False, stops=[at(1)])  # not all goals
    assert evaluate_stops(oracle, [TargetGoal("room", rooms=["kitchen"])], False, [at(-3)])


def test_spl_and_shortest_tour():
    assert spl(True, 4.0, 8.0) == 0.5 and spl(False, 4.0, 4.0) == 0.0 and spl(True, 4.0, 2.0) == 1.0

    def distance(a, b):
        a = 0.0 if a == "start" else a
        return abs(a - b)

    assert shortest_multi_goal(distance, "start", [[5.0], [1.0]], ordered=False) == 5.0
    assert shortest_multi_goal(distance, "start", [[5.0], [1.0]], ordered=True) == 9.0


def test_predicates_in_the_embedded_world(one_day):
    env = one_day.env
    interaction = one_day.history.interactions[0]
    receptacle = TargetGoal("receptacle", [interaction.goal_receptacle])
    # standing where the robot placed the object: at a viewpoint, facing it, seeing it
    assert goal_satisfied(env, receptacle, interaction.place_pose)
    turned = Pose.from_xy_yaw(*interaction.place_pose.position[:2], interaction.place_pose.yaw + math.pi)
    assert not goal_satisfied(env, receptacle, turned)
    far_room = max(env.world.rooms, key=lambda r: np.linalg.norm(r.center - interaction.place_pose.position[:2]))
    elsewhere = Pose.from_xy_yaw(*env.grid.nearest_navigable(far_room.center), 0.0)
    assert not goal_satisfied(env, receptacle, elsewhere)
    room_goal = TargetGoal("room", rooms=[env.room_of(elsewhere.position)])
    assert goal_satisfied(env, room_goal, elsewhere)


class Measured:
    """An oracle that reports fixed measurements, and counts renders."""

    def __init__(self, geodesic, bearing, visibility):
        self.values = (geodesic, bearing, visibility)
        self.renders = 0

    def geodesic_to_entity(self, xy, entity_id):
        return self.values[0]

    def bearing(self, pose, entity_id):
        return self.values[1]

    def visible_fraction(self, pose, entity_id):
        self.renders += 1
        return self.values[2]

    def room_of(self, xy):
        return None


def test_thresholds_and_findingdorys_ablations():
    assert (DEFAULT.object_distance, DEFAULT.object_angle, DEFAULT.receptacle_distance, DEFAULT.receptacle_angle, DEFAULT.min_visibility) == (
        2.0, math.pi / 4, 0.1, math.pi / 2, 0.001
    )
    assert DTG == Thresholds(min_visibility=0.0)
    assert SEM_COV == Thresholds(object_distance=10000.0, receptacle_distance=10000.0)
    obj, rec = TargetGoal("object", [1]), TargetGoal("receptacle", [1])
    pose = at(0)
    unseen = Measured(geodesic=1.0, bearing=0.0, visibility=0.0)  # near and faced, not visible
    assert not goal_satisfied(unseen, obj, pose) and not goal_satisfied(unseen, obj, pose, SEM_COV)
    renders = unseen.renders
    assert goal_satisfied(unseen, obj, pose, DTG) and unseen.renders == renders  # DTG does not render
    far = Measured(geodesic=50.0, bearing=0.0, visibility=0.5)  # seen and faced, far
    assert not goal_satisfied(far, obj, pose) and not goal_satisfied(far, obj, pose, DTG)
    assert goal_satisfied(far, obj, pose, SEM_COV) and goal_satisfied(far, rec, pose, SEM_COV)
    assert evaluate_stops(far, [obj, rec], False, [pose, pose], thresholds=SEM_COV)
    assert not evaluate_stops(far, [obj, rec], False, [pose, pose])
    aside = Measured(geodesic=0.05, bearing=1.0, visibility=0.5)  # 57 degrees off
    assert not goal_satisfied(aside, obj, pose, SEM_COV) and goal_satisfied(aside, rec, pose)
    assert aside.renders == 1  # the object failed on its angle before any render
    between = Measured(geodesic=0.5, bearing=0.0, visibility=0.5)
    assert goal_satisfied(between, obj, pose) and not goal_satisfied(between, rec, pose)
