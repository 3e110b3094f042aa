"""A small in-process client of the graph (tests, benchmarks, scripts): watches the JSON topics
of the sim, memory and agent nodes and sends tasks, instructions and recall requests.

    client = GraphClient()            # after rclpy.init(); spins itself in a thread
    client.wait(lambda: client.sim_state.get("phase") == "ready", 120)
    client.run_task("receptacle_picked_from")      # -> (agent result, sim evaluation)
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Callable

from .common import latched_qos, reliable_qos, string_msg


class GraphClient:
    def __init__(self, name: str = "graph_client", memory_node: str = "memory") -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from std_msgs.msg import String

        self.node = Node(name)
        self.lock = threading.Condition()
        self.sim_state: dict = {}
        self.tasks: list[dict] = []
        self.memory_status: dict = {}
        self.status_count = 0
        self.evaluations: list[dict] = []
        self.agent_results: list[dict] = []
        self.recalls: dict[str, dict] = {}
        n = self.node
        n.create_subscription(String, "sim/state", lambda m: self._set("sim_state", m), latched_qos())
        n.create_subscription(String, "sim/tasks", lambda m: self._set("tasks", m), latched_qos())
        n.create_subscription(String, f"{memory_node}/status", self._on_status, reliable_qos(10))
        n.create_subscription(String, "sim/evaluation", lambda m: self._append("evaluations", m), latched_qos(10))
        n.create_subscription(String, "agent/result", lambda m: self._append("agent_results", m), latched_qos(10))
        n.create_subscription(String, "recall/result", self._on_recall, latched_qos(10))
        self.task_pub = n.create_publisher(String, "sim/task", reliable_qos())
        self.instruction_pub = n.create_publisher(String, "instruction", reliable_qos())
        self.recall_pub = n.create_publisher(String, "recall/request", reliable_qos())
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.running = True
        self.thread.start()

    def _spin(self) -> None:
        while self.running:
            self.executor.spin_once(timeout_sec=0.1)

    def _set(self, attribute: str, msg) -> None:
        with self.lock:
            setattr(self, attribute, json.loads(msg.data))
            self.lock.notify_all()

    def _append(self, attribute: str, msg) -> None:
        with self.lock:
            getattr(self, attribute).append(json.loads(msg.data))
            self.lock.notify_all()

    def _on_status(self, msg) -> None:
        with self.lock:
            self.memory_status = json.loads(msg.data)
            self.status_count += 1
            self.lock.notify_all()

    def _on_recall(self, msg) -> None:
        data = json.loads(msg.data)
        with self.lock:
            self.recalls[data.get("id")] = data
            self.lock.notify_all()

    def wait(self, predicate: Callable[[], object], timeout: float, what: str = "condition"):
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
                self.lock.wait(min(left, 0.2))

    def connected(self, publisher, timeout: float = 30.0) -> None:
        self.wait(lambda: publisher.get_subscription_count() > 0, timeout, f"a subscriber on {publisher.topic_name}")

    def wait_ingested(self, timeout: float = 60.0, quiet_s: float = 2.0) -> dict:
        """Wait until the memory has taken (or dropped) what the sim streamed, and it is quiet."""
        self.wait(lambda: self.sim_state.get("phase") == "ready", timeout, "the sim's history")
        last, since = None, time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = dict(self.memory_status)
            key = (status.get("accepted"), status.get("dropped"), status.get("queue"), status.get("pending"))
            if key != last:
                last, since = key, time.monotonic()
            elif time.monotonic() - since >= quiet_s and not status.get("queue") and not status.get("pending"):
                return status
            time.sleep(0.2)
        raise TimeoutError("the memory node did not settle")

    def recall(self, text: str, constraints: dict | None = None, near: dict | None = None, k: int = 5, timeout: float = 30.0) -> dict:
        self.connected(self.recall_pub)
        request_id = uuid.uuid4().hex
        self.recall_pub.publish(string_msg({"id": request_id, "text": text, "k": k, "constraints": constraints, "near": near}))
        return self.wait(lambda: self.recalls.get(request_id), timeout, "the recall answer")

    def run_task(self, task_id: str, track: str = "oracle", timeout: float = 60.0) -> tuple[dict, dict]:
        """Start a task in the sim, hand its instruction to the agent, return (agent result, evaluation)."""
        task = next((t for t in self.tasks if t["task_id"] == task_id), None)
        if task is None:
            raise KeyError(f"no task {task_id!r}; tasks: {[t['task_id'] for t in self.tasks]}")
        self.connected(self.task_pub)
        self.task_pub.publish(string_msg({"task_id": task_id}))
        self.wait(lambda: self.sim_state.get("task_id") == task_id, timeout, f"the sim to start {task_id}")
        self.connected(self.instruction_pub)
        seen, judged = len(self.agent_results), len(self.evaluations)
        self.instruction_pub.publish(string_msg({"instruction": task["instruction"], "constraints": task["constraints"], "task_id": task_id, "track": track}))
        result = self.wait(lambda: next((r for r in self.agent_results[seen:] if r.get("task_id") == task_id), None), timeout, f"the agent's result for {task_id}")

        def evaluations():
            return [e for e in self.evaluations[judged:] if e.get("task_id") == task_id]

        goals = len(result.get("navigation", []))
        try:  # one evaluation per goal driven; it left the sim before the agent heard the goal end
            self.wait(lambda: len(evaluations()) >= max(goals, 1), 5.0 if goals else 0.5, "the sim's evaluation")
        except TimeoutError:
            pass
        found = evaluations()
        return result, (found[-1] if found else {})

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=2.0)
        self.node.destroy_node()
