"""The instruction reasoner: an instruction in words -> the oracle track's structured query.

The language track asks a memory in words ("go to the mug you moved right after the red
bowl yesterday"). This module turns those words into the ``constraints`` of
``memory/resolve.py`` (the same structured query the oracle track hands over), so the language
track measures *understanding plus the memory's own contents*, through the same reasoner for
every memory. When it cannot tell what is asked it says so (``Parse.understood`` is False, with
the reason) instead of guessing a goal; the harness counts that as a failure.

It is offline and deterministic, and built from what the project has, not from the task
generator's template strings:

- **The memory's own vocabulary** (``Lexicon.from_memory``): the categories, attribute values,
  rooms and days the memory itself has seen (its ``catalog()`` and ``diary``), plus the
  detector's class list when the caller has it. A word is a category only if the robot can
  know that category.
- **Generic English**: a small lexicon of synonyms (couch -> sofa, cellphone -> phone),
  plurals, number words and ordinals ("third", "3rd", "second to last"), clock times
  ("10:35", "half past ten", "3 pm"), durations ("95 seconds", "two minutes"), relative days
  ("yesterday", "the day before yesterday", "3 days ago"), and verb classes (moving things;
  taking *from*; putting *on*; negation).
- **MiniLM** (optional, ``encoder``): a word the lexicon does not know is matched to the
  nearest category name by embedding when the cosine is high (``synonym_threshold``), e.g.
  "sneaker" -> shoe; never below the threshold.

The parse is compositional: entity mentions (category + attributes) are found first, then the
target (the first mention, or "the room where ..."), then what the rest of the sentence says
about it: interacted or not, the role of a receptacle (picked from / placed on), the other
party of the interaction, and one selector (order, right after / before, clock time, duration,
farthest, a room property). Multi-goal instructions ("revisit ... in the order: second,
first") become one goal per remembered interaction, numbered from the memory's own diary.

``canonical(constraints)`` is the form parse accuracy compares: keys the resolver treats as
implied (``interacted: True`` beside a role, a related party or an interaction selector) are
dropped on both sides.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from embodied_mem.constraints import validate_constraints

# ---------------------------------------------------------------------- generic English
NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "a": 1, "an": 1,
}
ORDINAL_WORDS = {
    "first": 0, "second": 1, "third": 2, "fourth": 3, "fifth": 4, "sixth": 5, "seventh": 6, "eighth": 7,
    "ninth": 8, "tenth": 9, "1st": 0, "2nd": 1, "3rd": 2, "4th": 3, "5th": 4, "6th": 5, "7th": 6, "8th": 7,
    "9th": 8, "10th": 9, "earliest": 0, "initial": 0, "opening": 0,
    "last": -1, "final": -1, "latest": -1, "ultimate": -1,
}
PENULTIMATE = ("second to last", "second last", "next to last", "one before last", "one before the last", "penultimate", "last but one", "second from last", "second most recent")
# A word people use for a thing -> the plain word a detector's class list is likely to hold.
SYNONYMS = {
    "couch": "sofa", "settee": "sofa", "countertop": "counter", "worktop": "counter", "cupboard": "cabinet",
    "bookshelf": "shelf", "bookcase": "shelf", "shelving": "shelf", "bedside table": "nightstand", "night stand": "nightstand",
    "night table": "nightstand", "chest of drawers": "dresser", "drawers": "dresser", "television stand": "tv stand",
    "tv cabinet": "tv stand", "tv unit": "tv stand", "washing machine": "washer", "kitchen table": "table",
    "writing desk": "desk", "easy chair": "armchair", "lounge chair": "armchair", "hall table": "console table",
    "cellphone": "phone", "cell phone": "phone", "smartphone": "phone", "mobile phone": "phone", "mobile": "phone",
    "notebook computer": "laptop", "computer": "laptop", "teacup": "cup", "coffee mug": "mug", "beaker": "cup",
    "teddy bear": "stuffed toy", "teddy": "stuffed toy", "plush toy": "stuffed toy", "plushie": "stuffed toy",
    "soft toy": "stuffed toy", "cushion": "pillow", "houseplant": "plant", "potted plant": "plant", "flowerpot": "plant",
    "photo frame": "picture frame", "picture": "picture frame", "photo": "picture frame", "tin": "can",
    "tin can": "can", "saucepan": "pot", "cooking pot": "pot", "tea kettle": "kettle", "sneaker": "shoe",
    "trainer": "shoe", "boot": "shoe", "hand towel": "towel", "tv remote": "remote", "remote control": "remote",
    "clicker": "remote", "toy vehicle": "toy car", "model car": "toy car", "pencil pouch": "pencil case",
    "pencil box": "pencil case", "external drive": "hard drive", "disk drive": "hard drive", "hard disk": "hard drive",
    "soap pump": "soap dispenser", "soap bottle": "soap dispenser", "tool box": "toolbox", "tool kit": "toolbox",
    "flower vase": "vase", "dish": "plate", "tumbler": "cup", "container": "jar",
    "grey": "grey", "gray": "grey", "wooden": "wood", "metallic": "metal", "steel": "metal", "porcelain": "ceramic",
    "clay": "ceramic", "cloth": "fabric", "textile": "fabric", "cardboard": "cardboard", "paper": "paper",
    "big": "large", "huge": "large", "tiny": "small", "little": "small", "mid sized": "medium", "medium sized": "medium",
    "ball shaped": "spherical", "round shaped": "round", "cylinder shaped": "cylindrical", "box shaped": "cuboidal",
}
GENERIC = {
    "object": "object", "objects": "object", "thing": "object", "things": "object", "item": "object", "items": "object",
    "something": "object", "stuff": "object",
    "receptacle": "receptacle", "receptacles": "receptacle", "surface": "receptacle", "surfaces": "receptacle",
    "furniture": "receptacle", "piece of furniture": "receptacle", "pieces of furniture": "receptacle",
    "room": "room", "rooms": "room", "area": "room",
}
# Verb stems (after the crude stemming below).
MOVE_VERBS = {"rearrang", "mov", "relocat", "carri", "carry", "shift", "transport", "touch", "handl", "interact", "manipulat", "pick", "took", "take", "grab", "grabb", "put", "plac", "brought", "bring", "fetch", "tidi", "tidy", "us", "lift", "set", "drop", "dropp", "left", "leav", "deposit", "stor", "rest", "got", "get", "remov", "collect", "return", "laid", "lay"}
FROM_VERBS = {"pick", "took", "take", "grab", "grabb", "lift", "remov", "fetch", "got", "get", "collect", "pull", "pul", "retriev"}
WEAK_TAKING = {"took", "take", "got", "get"}
PUT_VERBS = {"put", "plac", "set", "drop", "dropp", "left", "leav", "deposit", "stor", "rest", "laid", "lay", "position", "stash", "stow"}
NEGATIONS = {"not", "never", "no", "without", "nor", "untouched", "unmoved", "neither"}
FARTHEST = ("farthest", "furthest", "most distant", "farthest away", "furthest away", "most remote", "far away", "the longest way", "most far")
LONGEST = ("longest", "most time", "the most time", "slowest", "the longest time", "longest duration", "most amount of time", "greatest amount of time", "longest period")
SHORTEST = ("shortest", "least time", "the least time", "quickest", "fastest", "briefest", "least amount of time", "shortest time", "smallest amount of time", "quick", "fast")
AFTER = ("right after", "immediately after", "just after", "directly after", "after", "following", "next after", "straight after")
BEFORE = ("right before", "immediately before", "just before", "directly before", "before", "prior to", "preceding", "ahead of")
MULTI_VERBS = ("revisit", "re visit", "go back to", "return to", "visit again", "come back to", "go to each", "go to all", "visit all", "visit each", "visit every", "go round", "tour")
ALL_WORDS = {"all", "each", "every", "both"}


class NotUnderstood(ValueError):
    """The reasoner could not tell what the instruction asks (the message says why)."""


@dataclass
class Lexicon:
    """What the reasoner may name: the memory's categories, attributes, rooms and days.

    ``objects`` / ``receptacles``: surface form ("coffee table") -> category ("coffee_table");
    ``attributes``: value ("red") -> attribute key ("color"); ``days``: the days the memory
    has; ``interactions``: day -> [(object id, start receptacle id, goal receptacle id)], the
    memory's own rearrangements in order (multi-goal instructions are numbered from them).
    """

    objects: dict[str, str] = field(default_factory=dict)
    receptacles: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    rooms: dict[str, str] = field(default_factory=dict)
    days: list[int] = field(default_factory=list)
    interactions: dict[int, list[tuple]] = field(default_factory=dict)
    today: int | None = None  # the robot's own clock ("yesterday" counts back from it); None: the last day remembered

    @property
    def last_day(self) -> int:
        return self.today if self.today is not None else (self.days[-1] if self.days else 0)

    @staticmethod
    def build(objects: Iterable[str], receptacles: Iterable[str], attributes: dict[str, Iterable[str]] | None = None,
              rooms: Iterable[str] = (), days: Iterable[int] = (), interactions: dict[int, list[tuple]] | None = None) -> "Lexicon":
        lex = Lexicon(days=sorted({int(d) for d in days}), interactions=dict(interactions or {}))
        for table, names in ((lex.objects, objects), (lex.receptacles, receptacles)):
            for name in names:
                surface = name.replace("_", " ").lower()
                table[surface] = name
                table[plural(surface)] = name
        for key, values in (attributes or {}).items():
            for value in values:
                if key != "kind" and isinstance(value, str) and value:
                    lex.attributes.setdefault(value.lower(), key)
        for room in rooms:
            surface = room.replace("_", " ").lower()
            lex.rooms[surface] = room
        return lex

    @staticmethod
    def from_memory(system: Any, vocabulary: Any = None, today: int | None = None) -> "Lexicon":
        """The vocabulary of what ``system`` remembers (catalog, diary, floor plan), plus the
        detector's class list (``vocabulary.objects`` / ``.receptacles``) when given. ``today``:
        the day by the robot's own clock (not a memory: a robot knows the date)."""
        objects, receptacles, attributes = set(), set(), {}
        catalog = system.catalog() if hasattr(system, "catalog") else []
        for entity in catalog:
            (objects if entity.kind == "object" else receptacles).add(entity.category)
            for key, value in entity.attributes.items():
                attributes.setdefault(key, set()).add(value)
        diary = getattr(system, "diary", None)
        days, interactions, rooms = [], {}, []
        if diary is not None:
            days = diary.days()
            for entry in diary.entries:
                if entry.object_category:
                    objects.add(entry.object_category)
                    for key, value in entry.object_attributes.items():
                        attributes.setdefault(key, set()).add(value)
                if entry.receptacle_category:
                    receptacles.add(entry.receptacle_category)
            for day in days:
                interactions[day] = [(i.object_id, i.pick.receptacle_id, i.place.receptacle_id) for i in diary.interactions(day)]
            plan = getattr(diary, "floor_plan", None)
            rooms = [r.name for r in plan.regions] if plan is not None else []
        if vocabulary is not None:
            objects |= set(vocabulary.objects)
            receptacles |= set(vocabulary.receptacles)
        receptacles -= objects  # a detector's kinds are disjoint; a confused track may not be
        lexicon = Lexicon.build(sorted(objects), sorted(receptacles), {k: sorted(v) for k, v in attributes.items()}, rooms, days, interactions)
        lexicon.today = None if today is None else int(today)
        return lexicon

    def category_kind(self, surface: str) -> tuple[str, str] | None:
        if surface in self.objects:
            return "object", self.objects[surface]
        if surface in self.receptacles:
            return "receptacle", self.receptacles[surface]
        return None


def plural(word: str) -> str:
    head, _, last = word.rpartition(" ")
    if last.endswith(("s", "x", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}".strip()


def stem(word: str) -> str:
    """A crude stemmer for verb classes: rearranged -> rearrang, picked -> pick, carried -> carri."""
    for suffix in ("ing", "ed", "es", "e", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


# ---------------------------------------------------------------------- text
_CONTRACTIONS = {"didn't": "did not", "don't": "do not", "haven't": "have not", "hadn't": "had not", "wasn't": "was not",
                 "weren't": "were not", "isn't": "is not", "won't": "will not", "can't": "can not", "never": "never",
                 "i'd": "i had", "you'd": "you had", "i've": "i have", "you've": "you have", "i'm": "i am", "you're": "you are"}


def normalize(text: str) -> str:
    text = text.lower().replace("’", "'").replace("-", " ").replace("o'clock", "o clock")
    for short, long in _CONTRACTIONS.items():
        text = text.replace(short, long)
    text = text.replace("n't", " not")
    text = re.sub(r"(\d)\s*([ap])\.?m\.?\b", r"\1 \2m", text)
    text = re.sub(r"[^a-z0-9:,' ]+", " ", text)
    text = text.replace(",", " , ").replace("'s", "")
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class Mention:
    """An entity the instruction names: ``kind`` object | receptacle | room, with category
    (None for "an object", "a receptacle") and attributes; ``start`` / ``end`` token span."""

    kind: str
    category: str | None
    attributes: dict[str, str]
    start: int
    end: int

    def ref(self) -> dict:
        return {"category": self.category, "attributes": dict(self.attributes)}


@dataclass
class Parse:
    """What the reasoner made of an instruction."""

    instruction: str
    constraints: dict | None
    understood: bool
    reason: str = ""
    source: str = "offline"


@dataclass
class ReasonerConfig:
    """``encoder``: a text encoder name for the synonym fallback (None: lexicon only)."""

    encoder: str | None = "minilm"
    synonym_threshold: float = 0.72


class InstructionReasoner:
    """Offline, deterministic instruction -> constraints (see the module docstring)."""

    def __init__(self, config: ReasonerConfig | None = None) -> None:
        self.config = config or ReasonerConfig()
        self._encoder = None
        self._embedded: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ public
    def parse(self, instruction: str, lexicon: Lexicon) -> Parse:
        if not isinstance(instruction, str) or not instruction.strip():
            return Parse(str(instruction), None, False, "empty instruction")
        try:
            constraints = self._parse(instruction, lexicon)
            validate_constraints(constraints)
        except NotUnderstood as error:
            return Parse(instruction, None, False, str(error))
        return Parse(instruction, constraints, True)

    # ------------------------------------------------------------------ the parse
    def _parse(self, instruction: str, lex: Lexicon) -> dict:
        text = normalize(instruction)
        # Requests to the robot ("take me there", "bring me to") are not things it did.
        text = re.sub(r"\b(take|bring|lead|get|show|guide|drive|walk) (me|us)( there| to it| over| back)?\b", " ", text)
        text = re.sub(r"\s+", " ", text).strip()
        words = text.split()
        mentions = self._mentions(words, lex)
        day = self._day(text, lex)
        multi = self._multi(text, words, mentions, lex, day)
        if multi is not None:
            return multi
        room_goal = self._room_goal(text, words, mentions, lex, day)
        if room_goal is not None:
            return {"goals": [room_goal], "ordered": False}
        targets = [m for m in mentions if m.kind in ("object", "receptacle")]
        if not targets:
            raise NotUnderstood("no object, receptacle or room named")
        target = targets[0]
        rest = [m for m in targets[1:]]
        goal: dict = {"target": target.kind, "day": day}
        if target.category is not None:
            goal["category"] = target.category
        if target.attributes:
            goal["attributes"] = dict(target.attributes)
        tail = words[target.end:]
        tail_text = " ".join(tail)
        negated = self._negated(tail)
        moved = self._has_verb(tail, MOVE_VERBS) or "interact" in tail_text or "use" in tail
        select, anchor = self._select(words, target, rest, lex)
        if anchor is not None:
            rest = [m for m in rest if m is not anchor]
        role = self._role(words, target, rest)
        # "a receptacle you picked an object from": a generic other party says interaction, not which
        named = [m for m in rest if m.category is not None or m.attributes]
        if len(named) < len(rest):
            moved = True
        related = named[0] if named else None
        if related is not None and related.kind == target.kind:
            raise NotUnderstood(f"two {target.kind}s named and no relation between them understood")
        if related is not None:
            goal["related"] = related.ref()
            role = role or "start"
        if target.kind == "object" and related is None:
            role = None  # "the item you picked up": a role names the other party, and there is none
        if negated and moved:
            role = None  # nothing was done with it: no side of an interaction
            goal["interacted"] = False
        if role is not None:
            goal["role"] = role
        if goal.get("interacted") is False:
            pass
        elif moved or select is not None:
            if not (role is not None and related is not None):
                goal["interacted"] = True
        if select is not None:
            goal["select"] = select
        if goal.get("interacted") is None and "role" not in goal and "related" not in goal and select is None:
            if target.category is None and not target.attributes:
                raise NotUnderstood("nothing says which " + target.kind + " is meant")
            goal["day"] = day if self._explicit_day(text) else None  # "a mug": any day
        elif goal["day"] is None:
            goal["day"] = lex.last_day
        if select is not None and select.get("by") == "farthest" and goal.get("interacted") is None and "role" not in goal:
            goal["interacted"] = not negated
        return {"goals": [goal], "ordered": False}

    # ------------------------------------------------------------------ mentions
    def _mentions(self, words: list[str], lex: Lexicon) -> list[Mention]:
        mentions: list[Mention] = []
        pending: dict[str, str] = {}
        pending_start = None
        i = 0
        while i < len(words):
            matched = False
            for n in (4, 3, 2, 1):
                if i + n > len(words):
                    continue
                phrase = " ".join(words[i:i + n])
                phrase = SYNONYMS.get(phrase, phrase)
                # An attribute word directly before a noun ("orange mug") is an attribute.
                attribute = lex.attributes.get(phrase)
                kind = lex.category_kind(phrase) or lex.category_kind(SYNONYMS.get(phrase, "")) if phrase else None
                if attribute is not None and (kind is None or self._noun_follows(words, i + n, lex)):
                    pending[attribute] = phrase
                    pending_start = i if pending_start is None else pending_start
                    i += n
                    matched = True
                    break
                if kind is not None:
                    mentions.append(Mention(kind[0], kind[1], self._take(pending), pending_start if pending_start is not None else i, i + n))
                    pending, pending_start = {}, None
                    i += n
                    matched = True
                    break
                if phrase in GENERIC:
                    generic = GENERIC[phrase]
                    if generic == "room":
                        mentions.append(Mention("room", None, {}, i, i + n))
                    else:
                        mentions.append(Mention(generic, None, self._take(pending), pending_start if pending_start is not None else i, i + n))
                    pending, pending_start = {}, None
                    i += n
                    matched = True
                    break
                if n == 1 and phrase in lex.rooms:
                    mentions.append(Mention("room", lex.rooms[phrase], {}, i, i + 1))
                    i += 1
                    matched = True
                    break
            if matched:
                continue
            word = words[i]
            # "made of glass", "used for drinking" attach to the mention before them.
            if word in ("made", "of", "from", "for", "used") and mentions:
                value = self._attribute_after(words, i, lex)
                if value is not None:
                    key, phrase, length = value
                    if key in ("material", "function") and mentions[-1].kind == "object" and mentions[-1].end >= i - 2:
                        mentions[-1].attributes[key] = phrase
                        i += length
                        continue
            guess = self._synonym(word, lex) if pending or (i > 0 and words[i - 1] in ("the", "a", "an", "my", "that", "this", "any")) else None
            if guess is not None:
                mentions.append(Mention(guess[0], guess[1], self._take(pending), pending_start if pending_start is not None else i, i + 1))
                pending, pending_start = {}, None
            elif word not in ("and", ",", "or") and pending and word not in lex.attributes:
                pending_start = None if not pending else pending_start
            i += 1
        return mentions

    @staticmethod
    def _take(pending: dict[str, str]) -> dict[str, str]:
        return dict(pending)

    def _noun_follows(self, words: list[str], at: int, lex: Lexicon) -> bool:
        for n in (3, 2, 1):
            phrase = " ".join(words[at:at + n])
            phrase = SYNONYMS.get(phrase, phrase)
            if phrase and (lex.category_kind(phrase) or phrase in GENERIC or phrase in lex.attributes or phrase in ("coloured", "colored")):
                return True
        return False

    def _attribute_after(self, words: list[str], at: int, lex: Lexicon):
        skip = at
        while skip < len(words) and words[skip] in ("made", "of", "from", "for", "used", "out"):
            skip += 1
        for n in (3, 2, 1):
            phrase = " ".join(words[skip:skip + n])
            phrase = SYNONYMS.get(phrase, phrase)
            key = lex.attributes.get(phrase)
            if key is not None:
                return key, phrase, skip - at + n
        return None

    def _synonym(self, word: str, lex: Lexicon) -> tuple[str, str] | None:
        """An unknown noun matched to the nearest category by MiniLM (cosine >= threshold)."""
        if self.config.encoder is None or len(word) < 3 or word in STOP_WORDS or not word.isalpha():
            return None
        names = sorted(set(lex.objects.values()) | set(lex.receptacles.values()))
        if not names:
            return None
        if self._encoder is None:
            from embodied_mem.encoders import build_encoder

            self._encoder = build_encoder(self.config.encoder)
        missing = [n for n in names + [word] if n not in self._embedded]
        if missing:
            for name, vector in zip(missing, self._encoder.encode([m.replace("_", " ") for m in missing])):
                self._embedded[name] = np.asarray(vector, dtype=np.float32)
        scores = np.array([float(self._embedded[word] @ self._embedded[n]) for n in names])
        best = int(np.argmax(scores))
        if scores[best] < self.config.synonym_threshold:
            return None
        name = names[best]
        return ("object" if name in lex.objects.values() else "receptacle"), name

    # ------------------------------------------------------------------ pieces
    def _day(self, text: str, lex: Lexicon) -> int | None:
        last = lex.last_day
        back = None
        if re.search(r"\bday before yesterday\b", text):
            back = 2
        elif m := re.search(r"\b(\w+) days? (ago|back|earlier|before)\b", text):
            back = _number(m.group(1))
        elif re.search(r"\b(yesterday|today|this morning|this afternoon|earlier today|last time|most recent day|last day)\b", text):
            back = 1
        elif m := re.search(r"\bday (\d+)\b", text):
            return int(m.group(1)) - 1
        if back is None:
            return None
        if back < 1 or last - (back - 1) < 0:
            raise NotUnderstood(f"{back} day(s) back from day {last} is before the robot's first day")
        return last - (back - 1)

    @staticmethod
    def _explicit_day(text: str) -> bool:
        return bool(re.search(r"\b(yesterday|today|days? (ago|back|earlier|before)|this morning|this afternoon)\b", text))

    @staticmethod
    def _negated(words: list[str]) -> bool:
        return any(w in NEGATIONS for w in words) or "left alone" in " ".join(words)

    @staticmethod
    def _has_verb(words: list[str], verbs: set[str]) -> bool:
        return any(stem(w) in verbs or w in verbs for w in words)

    def _role(self, words: list[str], target: Mention, rest: list[Mention]) -> str | None:
        """start (picked from) | goal (placed on) | None, from the verbs and prepositions.

        A verb of taking ("picked", "grabbed", "lifted") says start, one of putting ("placed",
        "set down", "dropped off") says goal; a verb of moving in general ("moved", "brought")
        takes its role from the preposition ("from" / "off" vs "on" / "onto" / "to").
        """
        text = " ".join(words[target.start:])
        # "farthest from where you are" / "from here" say where the robot is, not a role.
        text = re.sub(r"\bfrom (where|here|you|your|me|my|this|the robot|the current|current)\b.*?(?=\b(that|which|and)\b|$)", " ", text)
        tail = text.split()
        if re.search(r"\b(pick|picked|took|taken|grabbed|removed|lifted|got|fetched|collected)\b.*\b(or|and)\b.*\b(placed|put|set|dropped|left|deposited)\b", text):
            return None  # "picked from or placed on": either
        stems = [stem(w) for w in tail]
        frm = re.search(r"\b(from|off|out of)\b", text)
        # "took" / "got" take from only with a from / off ("it took 40 seconds" is a duration).
        taking = any(s in FROM_VERBS and (s not in WEAK_TAKING or frm) for s in stems) and not re.search(r"\bdropped off\b", text)
        putting = any(s in PUT_VERBS for s in stems) or bool(re.search(r"\bdropped off\b", text))
        general = any(s in MOVE_VERBS for s in stems)
        if taking and not putting:
            return "start"
        if putting and not taking:
            return "goal"
        on = re.search(r"\b(on|onto|into|upon|atop|to)\b", text)
        if (taking and putting) or general:
            if frm and (not on or frm.start() < on.start()):
                return "start" if (taking or general) else None
            if on and target.kind == "receptacle" and (putting or re.search(r"\b(onto|on top of|upon)\b", text)):
                return "goal"
            if taking and putting:
                first_take = min(i for i, s in enumerate(stems) if s in FROM_VERBS)
                first_put = min(i for i, s in enumerate(stems) if s in PUT_VERBS)
                return "start" if first_take < first_put else "goal"
        return None

    def _select(self, words: list[str], target: Mention, rest: list[Mention], lex: Lexicon) -> tuple[dict | None, Mention | None]:
        text = " ".join(words)
        for phrase in FARTHEST:
            if re.search(rf"\b{phrase}\b", text):
                return {"by": "farthest"}, None
        for direction, phrases in (("after", AFTER), ("before", BEFORE)):
            for phrase in phrases:
                m = re.search(rf"\b{phrase}\b", text)
                if m is None:
                    continue
                at = len(text[: m.end()].split())
                anchor = next((r for r in rest if r.start >= at - 1 and r.kind == "object" and r.category is not None), None)
                if anchor is not None:
                    return {"by": direction, "object": anchor.ref()}, anchor
        minute = _clock_minute(text)
        if minute is not None:
            return {"by": "time", "minute": minute}, None
        seconds = _duration_seconds(text)
        if seconds is not None:
            return {"by": "duration", "seconds": seconds, "tolerance": 10.0}, None
        if re.search(r"\b(took|take|taking|spent|needed|lasted|required|time|long|quickest|fastest|slowest|longest|shortest)\b", text):
            for extreme, phrases in (("shortest", SHORTEST), ("longest", LONGEST)):
                if any(re.search(rf"\b{p}\b", text) for p in phrases):
                    return {"by": "duration", "extreme": extreme}, None
        index = _ordinal(text)
        if index is not None:
            return {"by": "order", "index": index}, None
        return None, None

    # ------------------------------------------------------------------ rooms
    def _room_goal(self, text: str, words: list[str], mentions: list[Mention], lex: Lexicon, day: int | None) -> dict | None:
        rooms = [m for m in mentions if m.kind == "room"]
        firsts = [m for m in mentions if m.kind in ("object", "receptacle", "room")]
        if not rooms or firsts[0].kind != "room":
            return None
        day = day if day is not None else lex.last_day
        goal = {"target": "room", "day": day}
        objects = [m for m in mentions if m.kind == "object" and m.category is not None]
        if objects:
            obj = objects[0]
            initial = re.search(r"\b(before|originally|used to be|was at first|first was|started|found|came from|took it from|picked it up|where it was|had been|from where)\b", text)
            final = re.search(r"\b(put|placed|left|moved it to|brought|took it to|dropped|set|ended up|now|carried|moved the|moved)\b", text)
            when = "initial" if initial and not re.search(r"\b(put|placed|left|dropped|brought)\b", text) else ("final" if final else None)
            if when is None:
                raise NotUnderstood("a room and an object are named, but not whether before or after it was moved")
            goal["select"] = {"by": "object_room", "object": obj.ref(), "when": when}
            return goal
        if re.search(r"\b(not|never|no)\b.{0,30}\b(visit|go|went|enter|set foot|been|step|pass)", text) or re.search(r"\b(unvisited|skipped|avoided|stayed out of)\b", text):
            prop = "not_visited"
        elif re.search(r"\b(most time|longest|most of (your|the) time|spent the most|stayed the longest|the longest time|greatest amount of time)\b", text):
            prop = "longest_time"
        elif re.search(r"\b(start|started|began|begin|beginning|woke|first were|were first|first room|day began|day started|initial)\b", text):
            prop = "initial"
        elif re.search(r"\b(finish|finished|ended|end|last room|stopped|final|day ended|were last|last were|wrapped up)\b", text):
            prop = "final"
        elif re.search(r"\b(visit|visited|went|been|entered)\b", text):
            prop = "visited"
        else:
            raise NotUnderstood("a room is asked for, but not which one")
        goal["select"] = {"by": "room", "property": prop}
        return goal

    # ------------------------------------------------------------------ multi-goal
    def _multi(self, text: str, words: list[str], mentions: list[Mention], lex: Lexicon, day: int | None) -> dict | None:
        plural_target = re.search(r"\b(objects|things|items|receptacles|surfaces|pieces of furniture)\b", text)
        each = re.search(r"\b(all|each|every|both)( of)?( the)? (object|thing|item|receptacle|surface|piece of furniture)s?\b", text)
        revisit = any(re.search(rf"\b{p}\b", text) for p in MULTI_VERBS)
        if any(re.search(rf"\b{p}\b", text) for p in FARTHEST) or re.search(r"\bthe one\b", text):
            return None  # "of all the surfaces ..., the one farthest": one goal
        if not ((plural_target and revisit) or (each and (revisit or re.search(r"\b(visit|go to|navigate to)\b", text)))):
            return None
        noun = (each.group(4) if each else plural_target.group(1)).rstrip("s")
        target = "object" if noun in ("object", "thing", "item") else "receptacle"
        plural_target = each or plural_target
        tail = text[plural_target.end():]
        role = None
        if target == "receptacle":
            if re.search(r"\b(from|off)\b", tail):
                role = "start"
            elif re.search(r"\b(on|onto|into|in|upon)\b", tail):
                role = "goal"
            else:
                raise NotUnderstood("revisit receptacles: picked from or placed on?")
        day = day if day is not None else lex.last_day
        interactions = lex.interactions.get(day, [])
        indices = list(range(len(interactions)))
        if re.search(r"\b(first|earliest) (and|&) (the )?(last|latest|final)\b", text):
            indices = [0, len(interactions) - 1]
        elif re.search(r"\b(first|earliest) (two|2)\b|\b(two|2) (first|earliest)\b", text):
            indices = [0, 1]
        kept: list[tuple[int, Any]] = []
        for index in indices:
            if not 0 <= index < len(interactions):
                continue
            entity = interactions[index][0 if target == "object" else (1 if role == "start" else 2)]
            if entity not in {e for _, e in kept}:
                kept.append((index, entity))
        if len(kept) < 2:
            raise NotUnderstood(f"a revisit of several {target}s, but the memory has {len(kept)} such interaction(s) on that day")
        sequence = list(range(len(kept)))
        # Ordered only when a visiting order is spelt out ("in this order: third, first, second").
        at = re.search(r"\border\b", text)
        listed = _ordinal_list(text[at.end():]) if at else []
        ordered = bool(listed)
        if ordered:
            if sorted(listed) != sequence:
                raise NotUnderstood(f"the visiting order {listed} does not name each of the {len(kept)} remembered goals once")
            sequence = listed
        goals = []
        for position in sequence:
            goal = {"target": target, "day": day, "interacted": True, "select": {"by": "order", "index": kept[position][0]}}
            if role is not None:
                goal["role"] = role
            goals.append(goal)
        return {"goals": goals, "ordered": ordered}


STOP_WORDS = {
    "the", "and", "you", "your", "that", "this", "which", "what", "where", "when", "with", "from", "into", "onto", "then",
    "navigate", "go", "find", "take", "show", "head", "walk", "drive", "bring", "please", "yesterday", "today", "ago", "days",
    "day", "one", "any", "some", "all", "each", "every", "did", "not", "have", "had", "was", "were", "been", "just", "right",
    "after", "before", "first", "last", "time", "seconds", "minutes", "took", "moved", "put", "placed", "picked", "left",
    "way", "order", "revisit", "visit", "room", "back", "there", "here", "now", "are", "can", "could", "would", "its",
}


def _number(token: str) -> int | None:
    if token.isdigit():
        return int(token)
    return NUMBER_WORDS.get(token)


def _ordinal(text: str) -> int | None:
    for phrase in PENULTIMATE:
        if re.search(rf"\b{phrase}\b", text):
            return -2
    if re.search(r"\b(most recent(ly)?|most recent one)\b", text):
        return -1
    for word in text.split():
        if word in ORDINAL_WORDS:
            return ORDINAL_WORDS[word]
        if m := re.fullmatch(r"(\d+)(st|nd|rd|th)", word):
            return int(m.group(1)) - 1
    return None


def _ordinal_list(text: str) -> list[int]:
    out = []
    for word in re.findall(r"[a-z0-9]+", text):
        if word in ("last", "final", "latest"):
            break  # "last" in a visiting-order list is ambiguous without a count
        if word in ORDINAL_WORDS and ORDINAL_WORDS[word] >= 0:
            out.append(ORDINAL_WORDS[word])
        elif m := re.fullmatch(r"(\d+)(st|nd|rd|th)", word):
            out.append(int(m.group(1)) - 1)
    return out


def _clock_minute(text: str) -> int | None:
    """Minute of the day of a clock time: "10:35", "10.35 pm", "half past ten", "3 o clock"."""
    if m := re.search(r"\b(\d{1,2})[:.](\d{2})(?: (am|pm))?\b", text):
        return _to_minute(int(m[1]), int(m[2]), m[3])
    if m := re.search(r"\b(half|quarter) (past|after|to) (\w+)(?: (am|pm))?\b", text):
        hour = _number(m[3])
        if hour is None:
            return None
        offset = 30 if m[1] == "half" else 15
        return _to_minute(hour - 1, 60 - offset, m[4]) if m[2] == "to" else _to_minute(hour, offset, m[4])
    if m := re.search(r"\b(\d{1,2}|[a-z]+) (o clock|am|pm)\b", text):
        hour = _number(m[1])
        return None if hour is None else _to_minute(hour, 0, m[2] if m[2] != "o clock" else None)
    return None


def _to_minute(hour: int, minute: int, suffix: str | None) -> int | None:
    if suffix == "pm" and hour < 12:
        hour += 12
    if suffix == "am" and hour == 12:
        hour = 0
    if not (0 <= hour < 24 and 0 <= minute < 60):
        return None
    return hour * 60 + minute


def _duration_seconds(text: str) -> int | None:
    m = re.search(r"\b(\d+(?:\.\d+)?|\w+)(?: and a half)? (seconds?|secs?|s|minutes?|mins?)\b", text)
    if m is None:
        return None
    value: float | None
    try:
        value = float(m.group(1))
    except ValueError:
        value = _number(m.group(1))
    if value is None:
        return None
    if "and a half" in m.group(0):
        value += 0.5
    if m.group(2).startswith("m"):
        value *= 60.0
    if not math.isfinite(value) or value <= 0:
        return None
    return int(round(value))


def canonical(constraints: dict | None) -> dict | None:
    """The form parse accuracy compares: ``interacted: True`` is dropped where the resolver
    implies it (a role, a related party, or an interaction selector), floats rounded."""
    if constraints is None:
        return None
    goals = []
    for goal in constraints.get("goals", []):
        goal = {k: v for k, v in goal.items() if v is not None or k == "day"}
        select = goal.get("select") or {}
        implied = "role" in goal or "related" in goal or select.get("by") in ("order", "after", "before", "time", "duration")
        if implied and goal.get("interacted") is True:
            goal.pop("interacted")
        if "attributes" in goal and not goal["attributes"]:
            goal.pop("attributes")
        if "select" in goal and "tolerance" in goal["select"]:
            goal["select"] = {**goal["select"], "tolerance": float(goal["select"]["tolerance"])}
        goals.append(goal)
    return {"goals": goals, "ordered": bool(constraints.get("ordered", False))}
