"""``embodied-mem nodes <graph.yaml> [node.param=value ...]``: start a ROS 2 graph as processes.

Where only the PyPI wheels exist there is no ``ros2 launch``; this starts each node of a graph
description as its own process (``python -m <module> --ros-args -r __node:=<name>
--params-file <its parameters>``), passes Ctrl-C / SIGTERM on to all of them, and stops the
rest when one fails. ``launch/memory_stack.launch.py`` reads the same description for a full
ROS 2 install. A graph description::

    env: {ROS_DOMAIN_ID: "42"}      # optional, for every node (RMW_IMPLEMENTATION and a
                                    # localhost discovery range are filled in unless set)
    namespace: ""                   # optional
    nodes:
      - name: memory
        module: embodied_mem.nodes.memory_node
        parameters: {memory: frame_bank}

This module does not import rclpy.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import ros_environment

KNOWN_MODULES = {
    "sim": "embodied_mem.nodes.sim_node",
    "memory": "embodied_mem.nodes.memory_node",
    "agent": "embodied_mem.nodes.agent_node",
}


@dataclass
class NodeSpec:
    name: str
    module: str
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: dict[str, str] = field(default_factory=dict)


@dataclass
class Graph:
    nodes: list[NodeSpec]
    env: dict[str, str] = field(default_factory=dict)
    namespace: str = ""


def load_graph(path: str | os.PathLike, overrides: list[str] | None = None) -> Graph:
    """Read a graph description; ``overrides`` are ``node.param=value`` (value parsed as YAML)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not data["nodes"]:
        raise ValueError(f"{path}: a graph needs a non-empty 'nodes' list")
    unknown = sorted(set(data) - {"nodes", "env", "namespace"})
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; known: env, namespace, nodes")
    nodes = []
    for index, item in enumerate(data["nodes"]):
        if not isinstance(item, dict) or "name" not in item:
            raise ValueError(f"{path}: nodes[{index}] needs a name")
        extra = sorted(set(item) - {"name", "module", "parameters", "remappings"})
        if extra:
            raise ValueError(f"{path}: nodes[{index}] has unknown key(s) {extra}")
        module = item.get("module") or KNOWN_MODULES.get(item["name"])
        if not module:
            raise ValueError(f"{path}: node {item['name']!r} needs a module")
        nodes.append(NodeSpec(str(item["name"]), str(module), dict(item.get("parameters") or {}), dict(item.get("remappings") or {})))
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: node names must be unique, got {names}")
    graph = Graph(nodes, {str(k): str(v) for k, v in (data.get("env") or {}).items()}, str(data.get("namespace") or ""))
    for override in overrides or []:
        key, sep, value = override.partition("=")
        node_name, dot, param = key.partition(".")
        if not sep or not dot or not param:
            raise ValueError(f"override {override!r} must look like node.param=value")
        targets = [n for n in graph.nodes if n.name == node_name]
        if not targets:
            raise ValueError(f"override {override!r}: no node {node_name!r} (nodes: {names})")
        targets[0].parameters[param] = yaml.safe_load(value)
    return graph


def node_command(node: NodeSpec, params_file: str, namespace: str = "", python: str = sys.executable) -> list[str]:
    command = [python, "-m", node.module, "--ros-args", "-r", f"__node:={node.name}"]
    if namespace:
        command += ["-r", f"__ns:={namespace if namespace.startswith('/') else '/' + namespace}"]
    for source, target in node.remappings.items():
        command += ["-r", f"{source}:={target}"]
    return command + ["--params-file", params_file]


def write_params(node: NodeSpec, directory: str) -> str:
    """The node's parameters as a ROS 2 parameter file (``/**`` matches any namespace)."""
    import yaml

    import json

    path = Path(directory) / f"{node.name}.params.yaml"
    # ROS parameters cannot be mappings: a mapping (memory_overrides: {encoder: gt_hash}) goes as JSON text.
    values = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in node.parameters.items()} or {"use_sim_time": False}
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
    return str(path)


class GraphProcesses:
    """The running processes of a graph; ``stop()`` ends them (SIGINT, then SIGTERM, then SIGKILL)."""

    def __init__(self, graph: Graph, env: dict[str, str] | None = None, stdout=None, stderr=None) -> None:
        self.graph = graph
        self.directory = tempfile.mkdtemp(prefix="embodied-mem-graph-")
        self.env = ros_environment({**(os.environ if env is None else env), **graph.env})
        self.processes: dict[str, subprocess.Popen] = {}
        for node in graph.nodes:
            command = node_command(node, write_params(node, self.directory), graph.namespace)
            self.processes[node.name] = subprocess.Popen(command, env=self.env, stdout=stdout, stderr=stderr)

    def poll(self) -> dict[str, int | None]:
        return {name: process.poll() for name, process in self.processes.items()}

    def stop(self, timeout: float = 10.0) -> dict[str, int | None]:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in self.processes.values():
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.send_signal(sig)
            deadline = time.monotonic() + 3.0
        for process in self.processes.values():
            try:
                process.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                pass
        return self.poll()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="embodied-mem nodes",
        description="Start a ROS 2 graph (e.g. sim, memory and agent nodes) as separate processes from one description, without a ROS install.",
        epilog="example: embodied-mem nodes launch/graph_small.yaml memory.memory=mem4nav sim.seed=4",
    )
    parser.add_argument("graph", help="graph description (YAML), e.g. launch/graph_small.yaml")
    parser.add_argument("overrides", nargs="*", help="node.param=value (value read as YAML)")
    parser.add_argument("--print", action="store_true", help="print the commands and exit")
    args = parser.parse_args(argv)
    try:
        graph = load_graph(args.graph, args.overrides)
    except (OSError, ValueError) as error:
        print(f"embodied-mem nodes: error: {error}", file=sys.stderr)
        return 2
    if args.print:
        for node in graph.nodes:
            print(" ".join(node_command(node, f"<{node.name}.params.yaml>", graph.namespace)), "#", node.parameters)
        return 0
    import importlib.util

    if importlib.util.find_spec("rclpy") is None:
        print("embodied-mem nodes: error: rclpy is missing: pip install 'embodied-mem[ros]'", file=sys.stderr)
        return 2
    running = GraphProcesses(graph)
    stopping = {"signal": None}

    def on_signal(number, frame):
        stopping["signal"] = number

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"embodied-mem nodes: started {', '.join(f'{n}[{p.pid}]' for n, p in running.processes.items())}; Ctrl-C stops them", file=sys.stderr)
    code = 0
    try:
        while stopping["signal"] is None:
            states = running.poll()
            failed = {n: c for n, c in states.items() if c is not None and c != 0}
            if failed:
                print(f"embodied-mem nodes: {failed} exited; stopping the graph", file=sys.stderr)
                code = 1
                break
            if all(c is not None for c in states.values()):
                break
            time.sleep(0.2)
    finally:
        final = running.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"embodied-mem nodes: stopped ({final})", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
