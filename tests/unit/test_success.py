import math

import numpy as np

from embodied_mem.sim.tasks.success import TargetGoal, evaluate_stops, goal_satisfied, shortest_multi_goal, spl
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
