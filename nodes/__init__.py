"""embodied_mem.nodes: rclpy nodes over the library (memory, recall service, markers).

Reserved: nothing is implemented here yet. The ROS 2 issue is held back until the spatial memories
have been measured; this package exists so the layout of DESIGN.md is importable.
"""
