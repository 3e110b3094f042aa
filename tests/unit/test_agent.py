import numpy as np
import pytest

from embodied_mem.agent import Agent
from embodied_mem.types import Hit, Pose, Recall


def hit(goal, score, x=0.0):
    return Hit(1, 0.0, Pose.from_xy_yaw(x, 0, 0), np.array([x, 1.0, 0.5]), 7, score, "m", {"goal_index": goal})


def test_oracle_track_takes_the_best_hit_per_goal_in_goal_order():
    agent = Agent()
    recall = Recall([hit(1, 0.9, 1), hit(0, 0.2, 2), hit(0, 0.8, 3), hit(1, 0.1, 4)], "m", 0.0)
    chosen = agent.choose(recall, goal_count=2, track="oracle")
    assert [h.goal_index for h in chosen] == [0, 1] and [h.score for h in chosen] == [0.8, 0.9]
    assert len(agent.choose(recall, goal_count=3, track="oracle")) == 2  # a goal without hits is skipped


def test_language_track_never_sees_constraints_and_may_answer_several_goals():
    agent = Agent()
    query = agent.make_query("go to the mug", {"goals": [{"target": "object"}]}, "language", Pose.from_xy_yaw(0, 0, 0))
    assert query.constraints is None and query.text == "go to the mug"
    assert agent.make_query("x", {"goals": []}, "oracle", Pose.from_xy_yaw(0, 0, 0)).constraints == {"goals": []}
    recall = Recall([hit(0, 0.5), hit(0, 0.4)], "m", 0.0)
    assert len(agent.choose(recall, goal_count=2, track="language")) == 1  # one goal answered
    recall = Recall([hit(0, 0.5), hit(1, 0.4), hit(0, 0.1)], "m", 0.0)
    chosen = agent.choose(recall, goal_count=2, track="language")
    assert [h.goal_index for h in chosen] == [0, 1]  # a memory that splits the instruction answers both
    with pytest.raises(ValueError, match="track must be one of"):
        agent.make_query("x", None, "psychic", Pose.from_xy_yaw(0, 0, 0))
