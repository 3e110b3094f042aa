"""The agent node: an instruction in, a recall from the memory node, goals out to the base.

``instruction`` (std_msgs/String) carries plain text, or JSON ``{"instruction": text,
"constraints": {...}, "task_id": ..., "track": "oracle" | "language"}`` (constraints are the
structured task of the oracle track). The agent asks the memory node over ``recall/request``
(from where odometry says the robot is), keeps the best hit per goal (``embodied_mem.agent``),
and sends one goal at a time: a receptacle or room goal goes to the remembered stand pose
(``goal_pose``, geometry_msgs/PoseStamped in the map frame); an object with a remembered position
goes to ``goal_approach`` (geometry_msgs/PointStamped: the base stops ``standoff`` short of it,
facing it). It waits for each ``navigation/status`` and then reports on ``agent/result`` (JSON,
latched).
"""

from __future__ import annotations

import queue
import threading
import time
import uuid

from embodied_mem.agent import TRACKS, Agent, AgentConfig
from embodied_mem.types import Pose

from . import convert
from .common import declare, latched_qos, reliable_qos, ros, run_node, string_msg

DEFAULTS = {
    "track": "oracle",
    "k": 5,
    "map_frame": "map",
    "recall_timeout_s": 30.0,
    "navigation_timeout_s": 120.0,
    "connect_timeout_s": 30.0,
}
DESCRIPTIONS = {
    "track": "oracle (send the structured constraints) or language (the text only)",
    "k": "hits asked for per goal",
    "recall_timeout_s": "seconds to wait for the memory's answer",
    "navigation_timeout_s": "seconds to wait for each navigation/status",
    "connect_timeout_s": "seconds to wait for the memory / base to subscribe before sending",
}


def parse_instruction(text: str, default_track: str) -> dict:
    """Plain text or the JSON form; returns {instruction, constraints, task_id, track}."""
    import json

    data = None
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError as error:
            raise ValueError(f"instruction looks like JSON but is not: {error}") from error
    if data is None:
        data = {"instruction": text}
    if not isinstance(data.get("instruction"), str) or not data["instruction"].strip():
        raise ValueError("instruction needs a non-empty 'instruction' text")
    constraints = data.get("constraints")
    if constraints is not None and not isinstance(constraints, dict):
        raise ValueError("constraints must be a JSON object")
    track = data.get("track", default_track)
    if track not in TRACKS:
        raise ValueError(f"track must be one of {TRACKS}, got {track!r}")
    return {"instruction": data["instruction"], "constraints": constraints, "task_id": data.get("task_id"), "track": track}


def make_node():
    ros()
    from geometry_msgs.msg import PointStamped
    from nav_msgs.msg import Odometry
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.node import Node
    from std_msgs.msg import String

    class AgentNode(Node):
        def __init__(self) -> None:
            super().__init__("agent")
            self.params = p = declare(self, DEFAULTS, DESCRIPTIONS)
            self.agent = Agent(AgentConfig(k=int(p["k"])))
            self.pose = None
            self.results: dict = {}
            self.statuses: dict = {}
            self.changed = threading.Condition()
            self.jobs: queue.Queue = queue.Queue()
            self.closing = False
            group = MutuallyExclusiveCallbackGroup()
            self.create_subscription(String, "instruction", self.on_instruction, reliable_qos(), callback_group=group)
            self.create_subscription(Odometry, "odom", self.on_odom, reliable_qos(), callback_group=group)
            self.create_subscription(String, "recall/result", self.on_result, latched_qos(10), callback_group=group)
            self.create_subscription(String, "navigation/status", self.on_status, latched_qos(10), callback_group=group)
            self.request_pub = self.create_publisher(String, "recall/request", reliable_qos())
            from geometry_msgs.msg import PoseStamped

            self.pose_pub = self.create_publisher(PoseStamped, "goal_pose", reliable_qos())
            self.approach_pub = self.create_publisher(PointStamped, "goal_approach", reliable_qos())
            self.result_pub = self.create_publisher(String, "agent/result", latched_qos(10))
            self.thread = threading.Thread(target=self.run, name="agent", daemon=True)
            self.thread.start()

        # ------------------------------------------------------------------ inputs
        def on_instruction(self, msg) -> None:
            try:
                self.jobs.put(parse_instruction(msg.data, str(self.params["track"])))
            except ValueError as error:
                self.get_logger().warning(f"instruction dropped: {error}")
                self.result_pub.publish(string_msg({"task_id": None, "status": "rejected", "reason": str(error)}))

        def on_odom(self, msg) -> None:
            try:
                self.pose = convert.pose_from_msg(msg.pose.pose, "odometry")
            except convert.BadMessage as error:
                self.get_logger().warning(f"odometry dropped: {error}")

        def on_result(self, msg) -> None:
            try:
                import json

                data = json.loads(msg.data)
            except ValueError:
                return
            with self.changed:
                self.results[data.get("id")] = data
                self.changed.notify_all()

        def on_status(self, msg) -> None:
            import json

            try:
                data = json.loads(msg.data)
                key = (int(data["goal_stamp"]["sec"]), int(data["goal_stamp"]["nanosec"]))
            except (ValueError, KeyError, TypeError):
                return
            with self.changed:
                self.statuses[key] = data
                self.changed.notify_all()

        def _wait(self, table: dict, key, timeout: float):
            deadline = time.monotonic() + timeout
            with self.changed:
                while key not in table and not self.closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self.changed.wait(min(left, 0.5))
                return table.pop(key, None)

        def _connected(self, publisher) -> bool:
            deadline = time.monotonic() + float(self.params["connect_timeout_s"])
            while publisher.get_subscription_count() == 0 and time.monotonic() < deadline and not self.closing:
                time.sleep(0.05)
            return publisher.get_subscription_count() > 0

        # ------------------------------------------------------------------ one instruction
        def run(self) -> None:
            while not self.closing:
                try:
                    job = self.jobs.get(timeout=0.5)
                except queue.Empty:
                    continue
                try:
                    report = self.execute(job)
                except Exception as error:  # never let one instruction end the node
                    report = {"task_id": job.get("task_id"), "status": "error", "reason": f"{type(error).__name__}: {error}"}
                self.result_pub.publish(string_msg(report))
                self.get_logger().info(f"task {report.get('task_id')}: {report['status']}")

        def execute(self, job: dict) -> dict:
            p = self.params
            report = {"task_id": job["task_id"], "instruction": job["instruction"], "track": job["track"], "goals": [], "navigation": []}
            if self.pose is None:
                deadline = time.monotonic() + float(p["connect_timeout_s"])
                while self.pose is None and time.monotonic() < deadline:
                    time.sleep(0.05)
            query = self.agent.make_query(job["instruction"], job["constraints"], job["track"], self.pose or Pose([0.0, 0.0, 0.0]))
            request_id = uuid.uuid4().hex
            request = {"id": request_id, "text": query.text, "k": query.k, "constraints": query.constraints, "near": None if self.pose is None else self.pose.to_dict()}
            if not self._connected(self.request_pub):
                return {**report, "status": "failed", "reason": "no memory node subscribes to recall/request"}
            started = time.monotonic()
            self.request_pub.publish(string_msg(request))
            result = self._wait(self.results, request_id, float(p["recall_timeout_s"]))
            if result is None:
                return {**report, "status": "failed", "reason": "recall timed out"}
            report["recall_s"] = time.monotonic() - started
            if not result.get("ok"):
                return {**report, "status": "failed", "reason": f"recall refused: {result.get('error')}"}
            from embodied_mem.types import Recall

            hits = [convert.hit_from_dict(h) for h in result.get("hits", [])]
            chosen = self.agent.choose(Recall(hits, result.get("system", ""), float(result.get("latency_s", 0.0))), 0, job["track"])
            report["hits"] = len(hits)
            if not chosen:
                return {**report, "status": "failed", "reason": "the memory found nothing"}
            kinds = [g.get("target") for g in (query.constraints or {}).get("goals", [])]
            for hit in chosen:
                kind = kinds[hit.goal_index] if hit.goal_index < len(kinds) else hit.evidence.get("kind")
                status = self.send_goal(hit, kind, report)
                if status is None:
                    return {**report, "status": "failed", "reason": "navigation timed out"}
                report["navigation"].append(status)
                if status.get("status") != "succeeded":
                    return {**report, "status": "failed", "reason": f"navigation {status.get('status')}: {status.get('reason', '')}"}
            return {**report, "status": "done"}

        def send_goal(self, hit, kind, report: dict):
            stamp = self.get_clock().now().nanoseconds * 1e-9
            header_stamp = convert.seconds_to_stamp(stamp)
            frame = self.params["map_frame"]
            if (kind in ("receptacle", "room") and hit.agent_pose is not None) or hit.target_xyz is None:
                if hit.agent_pose is None:
                    return {"status": "unreachable", "reason": "hit has neither a pose nor a target"}
                msg = convert.pose_stamped_to_msg(hit.agent_pose, stamp, frame)
                publisher = self.pose_pub
                report["goals"].append({"goal_index": hit.goal_index, "type": "pose", "pose": hit.agent_pose.to_dict()})
            else:
                msg = PointStamped()
                msg.header.stamp = convert.seconds_to_stamp(stamp)
                msg.header.frame_id = frame
                msg.point.x, msg.point.y, msg.point.z = (float(v) for v in hit.target_xyz)
                publisher = self.approach_pub
                report["goals"].append({"goal_index": hit.goal_index, "type": "approach", "point": [float(v) for v in hit.target_xyz]})
            if not self._connected(publisher):
                return {"status": "unreachable", "reason": "no base subscribes to the goal topic"}
            publisher.publish(msg)
            return self._wait(self.statuses, (int(header_stamp.sec), int(header_stamp.nanosec)), float(self.params["navigation_timeout_s"]))

        def close(self) -> None:
            self.closing = True
            self.thread.join(timeout=5.0)

    return AgentNode()


def main(argv: list[str] | None = None) -> int:
    return run_node(make_node, argv)


if __name__ == "__main__":
    raise SystemExit(main())
