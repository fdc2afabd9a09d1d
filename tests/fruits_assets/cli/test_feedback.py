"""`fruits feedback`: the stored photos listed, one removed, a sender's photos dropped, and a clear error for a
missing root or an unknown id."""

import json

from fruits_assets.cli import main
from spark_code.storage.feedback import FeedbackStore
from tests.images_factory import GOOD_IMAGES


def test_list_remove_and_drop_a_sender(tmp_path, capsys, monkeypatch):
    root = str(tmp_path / "fb")
    store = FeedbackStore(root)
    a = store.add(GOOD_IMAGES["rgb.jpg"], "Kiwi", "flooder")
    b = store.add(GOOD_IMAGES["alpha.png"], "Banana", "flooder")
    c = store.add(GOOD_IMAGES["grayscale.jpg"], "Kiwi", "someone")

    assert main(["feedback", "--feedback-root", root, "--json", "list"]) == 0
    assert {r["id"]: r["sender"] for r in json.loads(capsys.readouterr().out)} == {
        a.id: "flooder",
        b.id: "flooder",
        c.id: "someone",
    }
    monkeypatch.setenv("FRUITS_FEEDBACK_ROOT", root)
    assert main(["feedback", "list"]) == 0
    shown = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert c.id[:12] in shown
    assert main(["feedback", "remove", c.id[:12]]) == 0  # the id as `list` shows it
    assert capsys.readouterr().out.startswith("1 photo(s) removed")
    assert main(["feedback", "drop-sender", "flooder"]) == 0
    assert capsys.readouterr().out.startswith("2 photo(s) removed")
    assert store.records() == []
    assert main(["feedback", "remove", c.id]) == 1
    assert "no feedback photo" in capsys.readouterr().err
    monkeypatch.delenv("FRUITS_FEEDBACK_ROOT")
    assert main(["feedback", "list"]) == 2
    assert "FRUITS_FEEDBACK_ROOT" in capsys.readouterr().err
