"""The embedded simulator as a robot on ROS 2.

First it lives its history: every step of the oracle robot's days is published at ``rate_hz``
as a robot's drivers would (rgb, depth, camera_info, odometry, detections, grasp / release),
with header stamps in simulated time. Then it is a mobile base: goals on ``goal_pose``
(``geometry_msgs/PoseStamped``: drive there and stop on that pose, what RViz's "2D Goal Pose"
and nav2's NavigateToPose take) and ``goal_approach`` (``geometry_msgs/PointStamped``: stop
``standoff`` metres from the point, facing it, on its near side) are driven by the oracle
navigator (A* on the occupancy grid), and each ends with a ``navigation/status`` JSON echoing the
goal's ``header.stamp``.

The evaluation oracle (for tests and demos; a robot has none): with ``publish_tasks`` the
FindingDory tasks of the history are published on ``sim/tasks`` (latched JSON). A
``sim/task`` message ``{"task_id": ...}`` puts the robot back where the history ended and
starts a task; the goals that follow share FindingDory's budget of 1000 actions, a single-goal
task is checked after every action (the navigator stops when the predicate holds), and after
each goal ``sim/evaluation`` says whether the task is solved so far (FindingDory's predicate,
multi-goal rules included).
"""

from __future__ import annotations

import queue
import threading
import time

from . import convert
from .common import declare, json_object, latched_qos, qos_by_name, reliable_qos, ros, run_node, sim_config, string_msg

LOW_LEVEL_MAX_STEPS = 1000  # FindingDory: low_level_policy_max_steps (as embodied_mem.eval.runner)

DEFAULTS = {
    "sim": "embedded_small",
    "perception": "detector",
    "sim_overrides": "{}",
    "seed": 3,
    "rate_hz": 20.0,
    "wait_for_subscribers": 1,
    "wait_timeout_s": 60.0,
    "start_delay_s": 1.0,
    "depth_encoding": "32FC1",
    "map_frame": "map",
    "base_frame": "base_link",
    "camera_frame": "camera_optical",
    "camera_qos": "sensor_data",
    "state_qos": "reliable",
    "publish_tasks": True,
    "task_templates": "",
    "standoff": 0.7,
}
DESCRIPTIONS = {
    "sim": "configs/sim/<name>.yaml",
    "perception": "configs/perception/<name>.yaml: detector (no ids, noisy) or gt (upper bound)",
    "sim_overrides": "JSON merged into the sim config, e.g. {\"history\": {\"days\": 2}}",
    "seed": "episode seed: the home, the robot's days and the tasks",
    "rate_hz": "history steps published per second of wall time (0: as fast as it renders)",
    "wait_for_subscribers": "wait until the rgb topic has this many subscribers before streaming",
    "wait_timeout_s": "give up waiting for subscribers after this long (stream anyway)",
    "start_delay_s": "seconds between the subscribers appearing and the first frame",
    "depth_encoding": "32FC1 (metres) or 16UC1 (millimetres)",
    "task_templates": "comma-separated task template ids to publish (empty: all)",
    "standoff": "metres between the robot and a goal_approach point",
}


def raw_stamp(msg) -> dict:
    """A goal's header stamp as it came: the key its navigation/status is matched by."""
    return {"sec": int(msg.header.stamp.sec), "nanosec": int(msg.header.stamp.nanosec)}


def make_node():
    ros()
    from geometry_msgs.msg import PointStamped, PoseArray, PoseStamped, TransformStamped
    from nav_msgs.msg import Odometry
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String

    from embodied_mem.sim.embedded.episode import EmbeddedEpisode
    from embodied_mem.sim.tasks.generator import TaskConfig
    from embodied_mem.sim.tasks.success import evaluate_stops, goal_satisfied
    from embodied_mem.types import Pose

    class SimNode(Node):
        def __init__(self) -> None:
            super().__init__("sim")
            self.params = p = declare(self, DEFAULTS, DESCRIPTIONS)
            self.config = sim_config(p["sim"], p["perception"], json_object(p["sim_overrides"], "sim_overrides"))
            self.episode = EmbeddedEpisode(self.config, int(p["seed"]))
            self.env = self.episode.env
            camera = qos_by_name(p["camera_qos"], 10)
            state = qos_by_name(p["state_qos"], 100)
            self.rgb_pub = self.create_publisher(Image, "camera/rgb/image_raw", camera)
            self.depth_pub = self.create_publisher(Image, "camera/depth/image_raw", camera)
            self.info_pub = self.create_publisher(CameraInfo, "camera/rgb/camera_info", camera)
            self.odom_pub = self.create_publisher(Odometry, "odom", state)
            self.det_pub = self.create_publisher(String, "detections", state)
            self.event_pubs = {kind: self.create_publisher(PoseArray, kind, state) for kind in convert.EVENT_TOPICS}
            self.mount_pub = self.create_publisher(TransformStamped, "camera_mount", latched_qos())
            self.plan_pub = self.create_publisher(String, "floor_plan", latched_qos())
            self.state_pub = self.create_publisher(String, "sim/state", latched_qos())
            self.tasks_pub = self.create_publisher(String, "sim/tasks", latched_qos())
            self.nav_pub = self.create_publisher(String, "navigation/status", latched_qos(10))
            self.eval_pub = self.create_publisher(String, "sim/evaluation", latched_qos(10))
            commands = MutuallyExclusiveCallbackGroup()
            self.create_subscription(PoseStamped, "goal_pose", lambda m: self.on_goal("pose", m), reliable_qos(), callback_group=commands)
            self.create_subscription(PointStamped, "goal_approach", lambda m: self.on_goal("approach", m), reliable_qos(), callback_group=commands)
            self.create_subscription(String, "sim/task", self.on_task, reliable_qos(), callback_group=commands)
            self.phase = "waiting"
            self.odom_stamp = -1.0
            self.last_stamp = None  # of the history's last frame
            self.published = 0
            self.tasks = []
            self.task = None
            self.goals: queue.Queue = queue.Queue()
            self.closing = False
            self.mount_pub.publish(convert.transform_to_msg(self.env.camera.body_T_camera, 0.0, p["base_frame"], p["camera_frame"]))
            self.plan_pub.publish(string_msg(self.episode.floor_plan().to_dict()))
            self.publish_state()
            self.thread = threading.Thread(target=self.run, name="sim", daemon=True)
            self.thread.start()

        # ------------------------------------------------------------------ state
        def publish_state(self, **extra) -> None:
            state = {"phase": self.phase, "frames_published": self.published, "tasks": len(self.tasks), "seed": int(self.params["seed"]), "last_stamp": self.last_stamp}
            self.state_pub.publish(string_msg({**state, **extra}))

        def publish_odom(self, believed: Pose, stamp: float) -> None:
            # Odometry never repeats a stamp (a subscriber refuses one that does): a pose sent
            # again without the clock moving (the history's end, a task's start) is 1 ms later.
            stamp = max(stamp, self.odom_stamp + 0.001)
            self.odom_stamp = stamp
            self.odom_pub.publish(convert.odometry_to_msg(believed, stamp, self.params["map_frame"], self.params["base_frame"]))

        def believed_now(self) -> Pose:
            return self.env.perception.believed(self.env.pose)

        # ------------------------------------------------------------------ history
        def run(self) -> None:
            import rclpy

            try:
                self._run()
            except Exception as error:
                if self.closing or not rclpy.ok():
                    return  # shut down mid-stream: publishers are gone
                self.get_logger().error(f"sim stopped: {type(error).__name__}: {error}")
                raise

        def _run(self) -> None:
            p = self.params
            wanted = int(p["wait_for_subscribers"])
            deadline = time.monotonic() + float(p["wait_timeout_s"])
            while wanted > 0 and self.rgb_pub.get_subscription_count() < wanted and time.monotonic() < deadline and not self.closing:
                time.sleep(0.05)
            if self.rgb_pub.get_subscription_count() < wanted:
                self.get_logger().warning(f"streaming with {self.rgb_pub.get_subscription_count()} subscribers (wanted {wanted})")
            time.sleep(float(p["start_delay_s"]))
            self.phase = "history"
            self.publish_state()
            period = 1.0 / float(p["rate_hz"]) if float(p["rate_hz"]) > 0 else 0.0
            started = time.monotonic()
            next_time = started
            for obs in self.episode.history():
                if self.closing:
                    return
                self.publish_observation(obs)
                self.published += 1
                if self.published % 50 == 0:
                    self.publish_state()
                next_time += period
                delay = next_time - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self.episode.believed_pose = obs.pose
            elapsed = time.monotonic() - started
            if p["publish_tasks"]:
                templates = [t for t in str(p["task_templates"]).split(",") if t.strip()] or None
                self.tasks = list(self.episode.tasks(TaskConfig(templates=templates)))
                self.tasks_pub.publish(string_msg([self.task_json(t) for t in self.tasks]))
            self.phase = "ready"
            self.publish_odom(obs.pose, self.env.stamp)
            self.last_stamp = obs.stamp
            self.publish_state(history_s=elapsed)
            self.get_logger().info(f"history done: {self.published} frames in {elapsed:.1f} s; {len(self.tasks)} tasks; taking goals")
            while not self.closing:
                try:
                    kind, msg = self.goals.get(timeout=0.5)
                except queue.Empty:
                    continue
                self.navigate(kind, msg)

        def publish_observation(self, obs) -> None:
            p = self.params
            camera_frame, stamp = p["camera_frame"], obs.stamp
            self.publish_odom(obs.pose, stamp)
            self.info_pub.publish(convert.camera_info_to_msg(obs.camera, stamp, camera_frame))
            self.det_pub.publish(string_msg(convert.detections_to_json(obs.detections, stamp, camera_frame, *obs.rgb.shape[:2])))
            for event in obs.events:
                if event.kind in self.event_pubs:
                    self.event_pubs[event.kind].publish(convert.event_to_msg(event, p["map_frame"]))
            self.depth_pub.publish(convert.depth_to_msg(obs.depth, stamp, camera_frame, p["depth_encoding"]))
            self.rgb_pub.publish(convert.rgb_to_msg(obs.rgb, stamp, camera_frame))

        @staticmethod
        def task_json(task) -> dict:
            return {
                "task_id": task.task_id,
                "category": task.category,
                "high_level_category": task.high_level_category,
                "instruction": task.instruction,
                "constraints": task.constraints,
                "goals": [g.to_dict() for g in task.goals],
                "ordered": task.ordered,
            }

        # ------------------------------------------------------------------ tasks and goals
        def on_task(self, msg) -> None:
            try:
                request = json_object(msg.data, "sim/task")
            except ValueError as error:
                self.get_logger().warning(str(error))
                return
            found = [t for t in self.tasks if t.task_id == request.get("task_id")]
            if self.phase != "ready" or not found:
                self.get_logger().warning(f"sim/task {request.get('task_id')!r}: no such task, or the history is not done")
                return
            self.goals.put(("task", found[0]))

        def on_goal(self, kind: str, msg) -> None:
            if self.phase == "history" or self.phase == "waiting":
                self.get_logger().warning("goal ignored: the robot is still living its history")
                self.nav_pub.publish(string_msg({"goal_stamp": raw_stamp(msg), "status": "rejected", "reason": "history running"}))
                return
            self.goals.put((kind, msg))

        def navigate(self, kind: str, msg) -> None:
            if kind == "task":
                self.task = {"task": msg, "stops": [], "steps": 0, "travelled": 0.0, "reached": False}
                self.episode.reset_to_start()
                self.publish_odom(self.believed_now(), self.env.stamp)
                self.phase = "ready"
                self.publish_state(task_id=msg.task_id)
                self.get_logger().info(f"task {msg.task_id}: {msg.instruction}")
                return
            goal_stamp = raw_stamp(msg)
            navigator = self.episode.navigator
            if kind == "pose":
                try:
                    goal = convert.pose_from_msg(msg.pose, "goal pose")
                except convert.BadMessage as error:
                    self.nav_pub.publish(string_msg({"goal_stamp": goal_stamp, "status": "rejected", "reason": str(error)}))
                    return
            else:
                goal = navigator.approach_pose([msg.point.x, msg.point.y, msg.point.z], float(self.params["standoff"]), self.env.pose)
            if goal is None:
                self.nav_pub.publish(string_msg({"goal_stamp": goal_stamp, "status": "unreachable", "reason": "no free pose near the point"}))
                self.evaluate(stopped=False)
                return
            task = self.task
            if task is None:
                metres, used, _ = navigator.drive_budget(goal, LOW_LEVEL_MAX_STEPS)
            elif task["reached"]:
                metres, used = 0.0, 0  # solved on the way (checked after every action): the robot stays
            else:
                spec = task["task"]
                single = len(spec.goals) == 1
                check = (lambda pose: goal_satisfied(self.episode.oracle, spec.goals[0], pose)) if single else None
                budget = LOW_LEVEL_MAX_STEPS - task["steps"]
                metres, used, reached = navigator.drive_budget(goal, budget, check) if budget > 0 else (0.0, 0, False)
                task["steps"] += used
                if metres != float("inf"):
                    task["travelled"] += metres
                task["reached"] = reached
            status = "unreachable" if metres == float("inf") else "succeeded"
            self.publish_odom(self.believed_now(), self.env.stamp)
            self.nav_pub.publish(string_msg({"goal_stamp": goal_stamp, "status": status, "steps": used, "travelled_m": metres, "pose": self.believed_now().to_dict()}))
            self.evaluate(stopped=status == "succeeded")

        def evaluate(self, stopped: bool) -> None:
            task = self.task
            if task is None:
                return
            spec = task["task"]
            if stopped:
                task["stops"].append(self.env.pose)
            stops = task["stops"]
            if len(spec.goals) == 1:
                success = task["reached"] or (bool(stops) and goal_satisfied(self.episode.oracle, spec.goals[0], stops[-1]))
            else:
                success = bool(stops) and evaluate_stops(self.episode.oracle, spec.goals, spec.ordered, stops)
            travelled = task["travelled"]
            self.eval_pub.publish(
                string_msg(
                    {
                        "task_id": spec.task_id,
                        "success": bool(success),
                        "stops": len(stops),
                        "goals": len(spec.goals),
                        "steps": task["steps"],
                        "travelled_m": travelled if travelled != float("inf") else None,
                        "true_pose": self.env.pose.to_dict(),
                    }
                )
            )

        def close(self) -> None:
            self.closing = True
            self.thread.join(timeout=5.0)

    return SimNode()


def main(argv: list[str] | None = None) -> int:
    return run_node(make_node, argv)


if __name__ == "__main__":
    raise SystemExit(main())
