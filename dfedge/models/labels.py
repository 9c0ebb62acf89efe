"""The parser's label sets and the regions named by their labels: plain data, read by the parser, the region index
and the command line's --region choices (without torch)."""

from __future__ import annotations

# Index -> name, as facer names them. LaPa's brow/eye sides (indices 2-5) are named the other way round in
# FaRL's own dataset code ("lb, rb, le, re"): the indices are authoritative, the side in the name is not.
LABEL_SETS: dict[str, tuple[str, ...]] = {
    "lapa": ("background", "face", "rb", "lb", "re", "le", "nose", "ulip", "imouth", "llip", "hair"),
    "celebm": (
        "background", "neck", "face", "cloth", "rr", "lr", "rb", "lb", "re", "le", "nose", "imouth", "llip",
        "ulip", "hair", "eyeg", "hat", "earr", "neck_l",
    ),
}

# Regions by label name; a name missing from a label set is simply not part of it there.
REGIONS: dict[str, tuple[str, ...]] = {
    "mouth": ("ulip", "imouth", "llip"),
    "eyes": ("re", "le"),
    "brows": ("rb", "lb"),
    "nose": ("nose",),
    "skin": ("face",),
    "hair": ("hair",),
    "face": ("face", "rb", "lb", "re", "le", "nose", "ulip", "imouth", "llip", "eyeg"),
    "all": (),  # every token (every class, background included): the topk head over the whole crop
}
