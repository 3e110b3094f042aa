"""ROS 2 launch file for the embodied_mem graph (a full ROS 2 install with ``launch`` / ``ros2 launch``).

    ros2 launch launch/memory_stack.launch.py
    ros2 launch launch/memory_stack.launch.py graph:=launch/graph_small.yaml overrides:="memory.memory=mem4nav sim.seed=4"

It reads the same graph description as ``embodied-mem nodes`` (``launch/graph_small.yaml`` by
default) and starts the same commands: each node is ``python -m embodied_mem.nodes.<node>`` with
its parameters in a ROS 2 parameter file, so the Python that runs ``ros2 launch`` must have
``embodied-mem`` installed (``pip install -e .`` next to a sourced ROS 2; the ``ros`` extra
is not needed there). To run only the memory node against a real robot, use a graph with just
that node and the remappings of your drivers (docs/ros2.md).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration

HERE = Path(__file__).resolve().parent


def _processes(context, *args, **kwargs):
    import tempfile

    from embodied_mem.nodes.common import ros_environment
    from embodied_mem.nodes.graph import load_graph, node_command, write_params

    graph = load_graph(LaunchConfiguration("graph").perform(context), shlex.split(LaunchConfiguration("overrides").perform(context)))
    directory = tempfile.mkdtemp(prefix="embodied-mem-launch-")
    # The graph's env, and what embodied-mem nodes would fill in (RMW, discovery range, the Fast
    # DDS profile for large images) where this shell has not chosen.
    full = ros_environment({**os.environ, **graph.env})
    env = {key: value for key, value in full.items() if os.environ.get(key) != value}
    actions = []
    for node in graph.nodes:
        command = node_command(node, write_params(node, directory), graph.namespace, python=sys.executable)
        actions.append(ExecuteProcess(cmd=command, name=node.name, output="screen", additional_env=env, sigterm_timeout="10"))
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument("graph", default_value=str(HERE / "graph_small.yaml"), description="graph description (YAML)"),
            DeclareLaunchArgument("overrides", default_value="", description="space-separated node.param=value overrides"),
            OpaqueFunction(function=_processes),
        ]
    )
