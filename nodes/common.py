"""What every node shares: environment defaults, QoS profiles, parameters, configs, JSON topics.

Importing this module does not import rclpy; ``ros()`` does (and names the extra to install).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping

ROS_ENV_DEFAULTS = {
    # The only RMW the PyPI wheels ship; a full ROS install may choose another.
    "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    # Discovery stays on this machine unless the user says otherwise (a robot's graph spans
    # hosts: set ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET there).
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
}


# Fast DDS for camera-sized messages. Its default shared-memory segment is 512 kB, so a 921 kB
# rgb8 640x480 image does not fit, goes over fragmented UDP, and on a busy machine most frames are
# lost (benchmarks/bench_ros_ingest.py: 27 % of rgb images arrived; with this profile 100 %, at
# 5 ms instead of 450 ms). A 16 MB segment, 4 MB UDP socket buffers, and UDP on the loopback
# interface only when discovery is LOCALHOST.
FASTDDS_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>shm_large</transport_id>
        <type>SHM</type>
        <segment_size>16777216</segment_size>
      </transport_descriptor>
      <transport_descriptor>
        <transport_id>udp</transport_id>
        <type>UDPv4</type>
        <sendBufferSize>4194304</sendBufferSize>
        <receiveBufferSize>4194304</receiveBufferSize>{allow}
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="embodied_mem_participant" is_default_profile="true">
      <rtps>
        <userTransports>
          <transport_id>shm_large</transport_id>
          <transport_id>udp</transport_id>
        </userTransports>
        <useBuiltinTransports>false</useBuiltinTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""
LOOPBACK_ONLY = """
        <interfaceWhiteList>
          <address>127.0.0.1</address>
        </interfaceWhiteList>"""


def fastdds_profile(localhost: bool) -> str:
    """Path of the Fast DDS profile above (written once into the temp directory)."""
    import tempfile

    name = "embodied_mem_fastdds_localhost.xml" if localhost else "embodied_mem_fastdds.xml"
    path = Path(tempfile.gettempdir()) / name
    text = FASTDDS_PROFILE.format(allow=LOOPBACK_ONLY if localhost else "")
    if not path.exists() or path.read_text() != text:
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        partial.replace(path)
    return str(path)


def ros_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the defaults above filled in, and the
    Fast DDS profile for large images unless a profile (or another RMW) is chosen already."""
    env = dict(os.environ if base is None else base)
    for key, value in ROS_ENV_DEFAULTS.items():
        env.setdefault(key, value)
    chosen = any(env.get(k) for k in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS"))
    if env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp" and not chosen and env.get("EMBODIED_MEM_DDS_PROFILE", "1") != "0":
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = fastdds_profile(env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST")
    return env


def ros():
    """Import rclpy (with this process's environment completed by ``ros_environment``), with a
    clear message when the ROS 2 wheels are missing."""
    for key, value in ros_environment().items():
        if os.environ.get(key) != value:
            os.environ[key] = value
    try:
        import rclpy
    except ImportError as error:  # pragma: no cover - depends on the install
        raise SystemExit("embodied_mem.nodes needs the ROS 2 Python wheels: pip install 'embodied-mem[ros]' (or source a ROS 2 install)") from error
    return rclpy


# ---------------------------------------------------------------------------------- QoS
def sensor_qos(depth: int = 5):
    """Cameras: best effort, keep last ``depth``, volatile (REP-2003's sensor-data profile)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)


def reliable_qos(depth: int = 50):
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def latched_qos(depth: int = 1):
    """Transient local + reliable: late subscribers get the last ``depth`` messages (ROS 1 "latched")."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def qos_by_name(name: str, depth: int):
    if name == "sensor_data":
        return sensor_qos(depth)
    if name == "reliable":
        return reliable_qos(depth)
    raise ValueError(f"QoS must be sensor_data or reliable, got {name!r}")


# ---------------------------------------------------------------------------------- parameters
def declare(node, defaults: Mapping[str, Any], descriptions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Declare every parameter with its default (and description); return their current values.

    A value of another type than its default is converted where that is lossless (``rate_hz: 40``
    for a float, as YAML and ``-p rate_hz:=40`` write it); otherwise it is a clear ``ValueError``.
    """
    from rcl_interfaces.msg import ParameterDescriptor

    descriptions = descriptions or {}
    values = {}
    for name, default in defaults.items():
        descriptor = ParameterDescriptor(description=descriptions.get(name, ""), dynamic_typing=True)
        value = node.declare_parameter(name, default, descriptor).value
        values[name] = _as_type(name, value, default)
    return values


def _as_type(name: str, value: Any, default: Any) -> Any:
    if type(value) is type(default):
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"parameter {name!r} must be {type(default).__name__} like its default {default!r}, got {value!r}")


# ---------------------------------------------------------------------------------- configs
def configs_dir() -> Path:
    import embodied_mem.configs

    return Path(embodied_mem.configs.__file__).parent


def _yaml(path: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def merge(base: dict, overrides: Mapping[str, Any]) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def json_object(text: str, what: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ValueError(f"{what} must be a JSON object, got {text!r}: {error}") from error
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {text!r}")
    return value


def memory_config(name: str, config_file: str = "", overrides: Mapping[str, Any] | None = None) -> dict:
    """``configs/memory/<name>.yaml`` (or ``config_file``), with ``overrides`` merged in."""
    path = Path(config_file) if config_file else configs_dir() / "memory" / f"{name}.yaml"
    if not path.exists():
        from embodied_mem.registry import names

        raise ValueError(f"no memory config {path}; registered memories: {', '.join(names('memory'))}")
    values = merge(_yaml(path), overrides or {})
    if name and values.get("name") != name and not config_file:
        values["name"] = name
    return values


def sim_config(name: str = "embedded_small", perception: str = "detector", overrides: Mapping[str, Any] | None = None):
    """An ``EmbeddedSimConfig`` from ``configs/sim/<name>.yaml`` and ``configs/perception/<perception>.yaml``."""
    from embodied_mem.registry import make_config
    from embodied_mem.sim.embedded.env import EnvConfig
    from embodied_mem.sim.embedded.episode import EmbeddedSimConfig
    from embodied_mem.sim.embedded.oracle import HistoryConfig
    from embodied_mem.sim.embedded.perception import PerceptionConfig
    from embodied_mem.sim.embedded.world import WorldConfig

    overrides = dict(overrides or {})
    sim = merge(_yaml(configs_dir() / "sim" / f"{name}.yaml"), {k: v for k, v in overrides.items() if k != "perception"})
    if sim.pop("name", "embedded") != "embedded":
        raise ValueError("only the embedded simulator runs as a node")
    percept = merge(_yaml(configs_dir() / "perception" / f"{perception}.yaml"), overrides.get("perception", {}))
    world = dict(sim["world"])
    for key in ("room_size", "receptacles_per_room"):
        if key in world:
            world[key] = tuple(world[key])
    history = dict(sim["history"])
    if "rooms_skipped_per_day" in history:
        history["rooms_skipped_per_day"] = tuple(history["rooms_skipped_per_day"])
    return EmbeddedSimConfig(
        world=make_config(WorldConfig, world, "sim.world"),
        env=make_config(EnvConfig, sim["env"], "sim.env"),
        history=make_config(HistoryConfig, history, "sim.history"),
        perception=make_config(PerceptionConfig, percept, "perception"),
    )


# ---------------------------------------------------------------------------------- JSON topics
def string_msg(payload: Any):
    from std_msgs.msg import String

    from .convert import to_json

    return String(data=payload if isinstance(payload, str) else to_json(payload))


EXECUTORS = ("multi", "single")


def make_executor(kind: str | None = None, threads: int = 4):
    """``EMBODIED_MEM_EXECUTOR``: single (default) or multi (rclpy's MultiThreadedExecutor).

    Every node does its slow work on its own thread (the memory's observe, the sim's rendering,
    the agent's task), so callbacks only parse and hand on, and the single-threaded executor
    takes messages with far less overhead: 640x480 at 30 Hz into the memory node, it received
    about 3x the frames of the multi-threaded one, at 3 ms instead of 100-600 ms latency
    (benchmarks/bench_ros_ingest.py). rclpy.experimental.EventsExecutor ran no timers here.
    """
    kind = kind or os.environ.get("EMBODIED_MEM_EXECUTOR", "single")
    if kind not in EXECUTORS:
        raise ValueError(f"EMBODIED_MEM_EXECUTOR must be one of {EXECUTORS}, got {kind!r}")
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    return SingleThreadedExecutor() if kind == "single" else MultiThreadedExecutor(num_threads=threads)


def run_node(factory, argv: list[str] | None = None, threads: int = 4) -> int:
    """``rclpy.init``, build the node, spin it (``make_executor``) until Ctrl-C / SIGTERM."""
    rclpy = ros()
    from rclpy.executors import ExternalShutdownException

    rclpy.init(args=sys.argv if argv is None else argv)
    node = None
    try:
        node = factory()
        executor = make_executor(threads=threads)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
