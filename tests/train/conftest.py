import numpy as np
import pytest

from dfedge.data.samples import LabelledSet
from dfedge.data.sources import ToySet


class DrawnToySet(LabelledSet):
    """ToySet(split, count) with its faces drawn once: the same Samples, description and labels, so every model
    scored on it sees exactly the faces ToySet gives, without redrawing them for each model."""

    def __init__(self, split: str, count: int, drawn: list | None = None) -> None:
        toy = ToySet(split, count)
        self.description, self._labels = toy.description, toy.labels()
        self.samples = drawn[:count] if drawn is not None and len(drawn) >= count else [toy[i] for i in range(count)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.samples[index]

    def labels(self) -> np.ndarray:
        return self._labels


@pytest.fixture(scope="session")
def toy_faces():
    """toy_faces(split, count) -> a DrawnToySet. Each face is a pure function of (split, index), so a smaller set
    of a split already drawn is its first `count` faces."""
    drawn: dict[str, list] = {}

    def get(split: str, count: int) -> DrawnToySet:
        faces = DrawnToySet(split, count, drawn.get(split))
        if len(faces.samples) > len(drawn.get(split, [])):
            drawn[split] = faces.samples
        return faces

    return get
