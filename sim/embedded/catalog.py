"""What a procedural home is made of: room types, receptacle types and object categories.

Sizes are (width along the wall, depth from the wall, height) in metres. Object categories
carry a base size, a shape and a function; colour, material and size class are drawn per
object, so instructions can name "the small red ceramic mug".
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReceptacleType:
    name: str
    size: tuple[float, float, float]
    colors: tuple[str, ...]
    material: str
    against_wall: bool = True


@dataclass(frozen=True)
class ObjectCategory:
    name: str
    size: tuple[float, float, float]  # base (x, y, z) extent
    shape: str  # "box" | "cylinder" | "sphere": how it is drawn
    shape_word: str  # the attribute a person would use: cylindrical, cuboidal, ...
    function: str
    materials: tuple[str, ...]


RECEPTACLES = {
    r.name: r
    for r in [
        ReceptacleType("counter", (1.8, 0.6, 0.9), ("white", "grey"), "stone"),
        ReceptacleType("table", (1.2, 0.8, 0.75), ("brown",), "wood", against_wall=False),
        ReceptacleType("dining_table", (1.6, 0.9, 0.75), ("brown", "black"), "wood", against_wall=False),
        ReceptacleType("coffee_table", (1.0, 0.6, 0.45), ("brown", "black"), "wood", against_wall=False),
        ReceptacleType("cabinet", (0.8, 0.5, 0.9), ("white", "brown"), "wood"),
        ReceptacleType("shelf", (1.0, 0.4, 1.1), ("brown", "white"), "wood"),
        ReceptacleType("sofa", (2.0, 0.9, 0.45), ("grey", "blue", "green"), "fabric"),
        ReceptacleType("armchair", (0.9, 0.9, 0.45), ("red", "grey"), "fabric"),
        ReceptacleType("bed", (2.0, 1.6, 0.55), ("white", "blue"), "fabric"),
        ReceptacleType("nightstand", (0.5, 0.45, 0.55), ("brown", "white"), "wood"),
        ReceptacleType("dresser", (1.2, 0.5, 0.85), ("brown", "white"), "wood"),
        ReceptacleType("desk", (1.2, 0.6, 0.75), ("brown", "black"), "wood"),
        ReceptacleType("tv_stand", (1.4, 0.45, 0.5), ("black",), "wood"),
        ReceptacleType("vanity", (1.0, 0.5, 0.85), ("white",), "stone"),
        ReceptacleType("sideboard", (1.5, 0.45, 0.85), ("brown",), "wood"),
        ReceptacleType("washer", (0.6, 0.6, 0.85), ("white",), "metal"),
        ReceptacleType("console_table", (1.0, 0.35, 0.8), ("black", "brown"), "metal"),
        ReceptacleType("bench", (1.2, 0.4, 0.45), ("brown",), "wood"),
    ]
}

ROOM_TYPES: dict[str, tuple[str, ...]] = {
    "kitchen": ("counter", "table", "cabinet", "shelf"),
    "living_room": ("sofa", "coffee_table", "tv_stand", "shelf", "armchair"),
    "bedroom": ("bed", "nightstand", "dresser", "desk", "shelf"),
    "bathroom": ("vanity", "cabinet", "shelf"),
    "dining_room": ("dining_table", "sideboard", "shelf"),
    "office": ("desk", "shelf", "cabinet", "table"),
    "laundry_room": ("washer", "shelf", "cabinet", "table"),
    "hallway": ("console_table", "bench", "shelf"),
}
# Every home has these; the rest are drawn from ROOM_TYPES.
CORE_ROOMS = ("kitchen", "living_room", "bedroom", "bathroom")

ROOM_COLORS = {
    "kitchen": (0.93, 0.91, 0.82),
    "living_room": (0.85, 0.88, 0.93),
    "bedroom": (0.90, 0.85, 0.90),
    "bathroom": (0.82, 0.93, 0.93),
    "dining_room": (0.93, 0.87, 0.80),
    "office": (0.86, 0.90, 0.84),
    "laundry_room": (0.88, 0.88, 0.88),
    "hallway": (0.92, 0.90, 0.86),
}

COLORS = {
    "red": (0.85, 0.12, 0.12),
    "green": (0.15, 0.65, 0.20),
    "blue": (0.15, 0.30, 0.85),
    "yellow": (0.95, 0.85, 0.10),
    "orange": (0.95, 0.50, 0.08),
    "purple": (0.55, 0.20, 0.70),
    "pink": (0.95, 0.55, 0.70),
    "white": (0.95, 0.95, 0.95),
    "black": (0.08, 0.08, 0.08),
    "grey": (0.50, 0.50, 0.50),
    "brown": (0.50, 0.32, 0.15),
}

SIZE_CLASSES = {"small": 0.8, "medium": 1.0, "large": 1.25}

OBJECTS = {
    o.name: o
    for o in [
        ObjectCategory("mug", (0.09, 0.09, 0.11), "cylinder", "cylindrical", "drinking", ("ceramic", "glass", "metal")),
        ObjectCategory("cup", (0.08, 0.08, 0.10), "cylinder", "cylindrical", "drinking", ("plastic", "glass", "paper")),
        ObjectCategory("bowl", (0.16, 0.16, 0.07), "cylinder", "round", "eating", ("ceramic", "wood", "plastic")),
        ObjectCategory("plate", (0.24, 0.24, 0.03), "cylinder", "flat", "eating", ("ceramic", "plastic")),
        ObjectCategory("bottle", (0.08, 0.08, 0.26), "cylinder", "cylindrical", "storing liquid", ("glass", "plastic", "metal")),
        ObjectCategory("vase", (0.13, 0.13, 0.28), "cylinder", "cylindrical", "decoration", ("glass", "ceramic")),
        ObjectCategory("candle", (0.07, 0.07, 0.14), "cylinder", "cylindrical", "lighting", ("wax",)),
        ObjectCategory("can", (0.07, 0.07, 0.12), "cylinder", "cylindrical", "storing food", ("metal",)),
        ObjectCategory("jar", (0.10, 0.10, 0.14), "cylinder", "cylindrical", "storage", ("glass", "plastic")),
        ObjectCategory("kettle", (0.18, 0.18, 0.22), "cylinder", "round", "cooking", ("metal", "plastic")),
        ObjectCategory("pot", (0.24, 0.24, 0.16), "cylinder", "round", "cooking", ("metal",)),
        ObjectCategory("plant", (0.20, 0.20, 0.32), "cylinder", "round", "decoration", ("ceramic", "plastic")),
        ObjectCategory("soap_dispenser", (0.07, 0.07, 0.18), "cylinder", "cylindrical", "cleaning", ("plastic", "glass")),
        ObjectCategory("book", (0.16, 0.23, 0.04), "box", "cuboidal", "reading", ("paper",)),
        ObjectCategory("laptop", (0.33, 0.23, 0.03), "box", "flat", "computing", ("metal", "plastic")),
        ObjectCategory("phone", (0.08, 0.16, 0.02), "box", "flat", "calling", ("metal", "plastic")),
        ObjectCategory("remote", (0.05, 0.18, 0.03), "box", "cuboidal", "entertainment", ("plastic",)),
        ObjectCategory("box", (0.22, 0.22, 0.16), "box", "cuboidal", "storage", ("cardboard", "plastic", "wood")),
        ObjectCategory("shoe", (0.30, 0.12, 0.11), "box", "cuboidal", "walking", ("leather", "fabric", "rubber")),
        ObjectCategory("towel", (0.30, 0.20, 0.06), "box", "flat", "cleaning", ("fabric",)),
        ObjectCategory("pillow", (0.40, 0.30, 0.12), "box", "cuboidal", "support", ("fabric",)),
        ObjectCategory("picture_frame", (0.20, 0.04, 0.25), "box", "rectangular", "decoration", ("wood", "metal")),
        ObjectCategory("clock", (0.22, 0.06, 0.22), "box", "square", "timekeeping", ("wood", "metal", "plastic")),
        ObjectCategory("toolbox", (0.38, 0.20, 0.18), "box", "cuboidal", "repairing", ("metal", "plastic")),
        ObjectCategory("pencil_case", (0.20, 0.07, 0.05), "box", "cuboidal", "writing", ("fabric", "plastic")),
        ObjectCategory("hard_drive", (0.12, 0.08, 0.02), "box", "flat", "digital storage", ("metal", "plastic")),
        ObjectCategory("cereal_box", (0.19, 0.07, 0.28), "box", "cuboidal", "nutrition", ("cardboard",)),
        ObjectCategory("toy_car", (0.18, 0.08, 0.07), "box", "cuboidal", "playing", ("plastic", "metal")),
        ObjectCategory("stuffed_toy", (0.20, 0.18, 0.25), "sphere", "animal", "playing", ("fabric",)),
        ObjectCategory("ball", (0.20, 0.20, 0.20), "sphere", "spherical", "playing", ("rubber", "leather")),
        ObjectCategory("apple", (0.08, 0.08, 0.08), "sphere", "spherical", "nutrition", ("organic",)),
        ObjectCategory("orange", (0.08, 0.08, 0.08), "sphere", "spherical", "nutrition", ("organic",)),
        ObjectCategory("tomato", (0.07, 0.07, 0.07), "sphere", "spherical", "nutrition", ("organic",)),
        ObjectCategory("globe", (0.25, 0.25, 0.25), "sphere", "spherical", "decoration", ("plastic", "metal")),
    ]
}
# The attributes an instruction may name, in FindingDory's spirit (its CSV has shape, color,
# material, functionality, print_or_design; we have no textures, so size stands in for print).
OBJECT_ATTRIBUTES = ("color", "material", "size", "shape", "function")
