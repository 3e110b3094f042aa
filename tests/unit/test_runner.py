"""The harness's FindingDory checks on real episodes: high level answers with history frame ids."""

from embodied_mem.agent import Agent
from embodied_mem.eval.runner import run_task
from embodied_mem.types import Hit, Recall


class Answers:
    """A memory that answers every goal with the frame ids it is told to."""

    name = "answers"

    def __init__(self, frame_ids, episode):
        self.frame_ids, self.episode = frame_ids, episode

    def recall(self, query):
        hits = []
        for index, frame_id in enumerate(self.frame_ids):
            pose = self.episode.frame_pose(frame_id) or self.episode.final_pose
            hits.append(Hit(frame_id, 0.0, pose, None, None, 1.0, self.name, {"goal_index": index}))
        return Recall(hits, self.name, 0.0)


def test_high_level_names_history_frames_and_an_invalid_id_fails(one_day):
    episode = one_day.episode
    task = next(t for t in one_day.tasks if len(t.goals) == 1 and t.goals[0].kind == "object")
    good = task.keyframes[0][0]  # a frame from whose true pose the goal holds
    result = run_task(episode, Answers([good], episode), Agent(), task, "oracle", 0, 3, "answers")
    assert result.high_level_success and result.high_level_dtg and result.high_level_sem_cov
    for bad in (10**9, -1, "7", None):  # no such frame of the history: fails, never crashes
        result = run_task(episode, Answers([bad], episode), Agent(), task, "oracle", 0, 3, "answers")
        assert not result.high_level_success, bad
    wrong_count = run_task(episode, Answers([good, good], episode), Agent(), task, "oracle", 0, 3, "answers")
    assert not wrong_count.high_level_success  # FindingDory: the number of answers must match the goals


def test_the_sem_cov_ablation_drops_the_distance_check(one_day):
    """A frame that sees the target from too far fails HL and passes sem_cov."""
    episode, history = one_day.episode, one_day.history
    checked = 0
    for task in (t for t in one_day.tasks if len(t.goals) == 1 and t.goals[0].kind == "object"):
        entity = task.goals[0].entity_ids[0]
        far = [
            s.frame_id for s in history.steps
            if s.visible.get(entity, 0) / history.image_pixels >= 0.002
            and episode.env.geodesic_to_entity(s.pose.position[:2], entity) > 2.5
            and episode.env.bearing(s.pose, entity) < 0.6
            and s.frame_id >= max(0, min(task.keyframes[0]) - 1)  # where the object is now
        ]
        if not far:
            continue
        result = run_task(episode, Answers([far[-1]], episode), Agent(), task, "oracle", 0, 3, "answers")
        if len(task.goals[0].entity_ids) == 1:
            assert not result.high_level_success and result.high_level_sem_cov, task.task_id
            checked += 1
    assert checked >= 1
