import json

import numpy as np
import pytest
from PIL import Image

from dfedge.data.sources import folder_set, list_set, open_set


def crop(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((448, 448, 3), value, np.uint8)).save(path)
    return path


def test_folder_set_labels_real_and_fake(tmp_path):
    crop(tmp_path / "real" / "a.png", 10)
    crop(tmp_path / "fake" / "b.png", 20)
    crop(tmp_path / "fake" / "sub" / "c.jpg", 30)
    data = folder_set(tmp_path)
    assert len(data) == 3 and list(data.labels()) == [0, 1, 1]
    assert data[0].image.shape == (448, 448, 3) and data[1].label == 1


def test_folder_without_class_folders_is_refused(tmp_path):
    with pytest.raises(ValueError, match="expected sub-folders real/ and fake/"):
        folder_set(tmp_path)


def test_csv_and_jsonl_lists(tmp_path):
    crop(tmp_path / "x.png", 1)
    crop(tmp_path / "y.png", 2)
    (tmp_path / "l.csv").write_text("path,label,video\nx.png,real,v1\ny.png,1,v2\n")
    (tmp_path / "l.jsonl").write_text(json.dumps({"path": "x.png", "label": "fake"}) + "\n")
    csv_set, jsonl_set = list_set(tmp_path / "l.csv"), list_set(tmp_path / "l.jsonl")
    assert list(csv_set.labels()) == [0, 1] and csv_set[1].video_id == "v2"
    assert list(jsonl_set.labels()) == [1]


def test_list_errors_name_the_line(tmp_path):
    crop(tmp_path / "x.png", 1)
    (tmp_path / "bad.csv").write_text("x.png,maybe\n")
    with pytest.raises(ValueError, match=r"bad.csv:1: label 'maybe'"):
        list_set(tmp_path / "bad.csv")
    (tmp_path / "gone.csv").write_text("missing.png,0\n")
    with pytest.raises(ValueError, match="1 listed file"):
        list_set(tmp_path / "gone.csv")


def test_open_set_forms(tmp_path):
    assert open_set("toy:val:7").description == "toy:val:7:mouth"
    assert len(open_set("toy")) == 400
    with pytest.raises(ValueError, match="no such folder or list file"):
        open_set(str(tmp_path / "nope"))
