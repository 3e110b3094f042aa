"""embodied_mem.nodes: the library on ROS 2, as thin rclpy nodes (docs/ros2.md).

- ``memory_node``: one memory system behind sensor topics, recall topics, save / load services,
  markers, status, and a durable MCAP log (``bag``).
- ``sim_node``: the embedded simulator as a robot (sensors while it lives its history, then a
  navigable base and the FindingDory oracle).
- ``agent_node``: instruction -> recall -> goals.
- ``graph``: ``embodied-mem nodes <graph.yaml>`` starts a graph as processes without a ROS install;
  ``launch/memory_stack.launch.py`` starts the same graph under ``ros2 launch``.
- ``convert`` / ``sync``: message checks and stamp synchronisation in plain numpy (no rclpy), so
  what counts as a bad message is tested everywhere.

Nothing in ``embodied_mem`` (the library) imports rclpy; only the node modules do, when run.
Install the ROS 2 wheels with ``pip install 'embodied-mem[ros]'``.
"""
