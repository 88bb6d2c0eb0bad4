"""Weights: found only locally, pickle refused unless trusted, sha256 checked and cached, strict loading."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from clearbench.config import home
from clearbench.encoders import weights as W
from clearbench.encoders.card import parse_card, write_card
from clearbench.encoders.mambaout import build_mambaout
from clearbench.encoders.registry import load_encoder
from clearbench.errors import ClearbenchError, InputError

TINY = {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]}


def _tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_mambaout(**TINY).state_dict()


def _weights_file(obj, name: str = "w.pth") -> Path:
    path = home() / "weights" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def _card(weights, name: str = "mo") -> None:
    write_card(
        {"name": name, "family": "mambaout", "weights": weights, "preprocessing": {"size": 64, "crop": 64}},
        overwrite=True,
    )


def test_missing_weights_error_names_the_expected_path_and_the_card_field():
    _card({"env": "CB_TEST_WEIGHTS", "path": "weights/never-there.pth", "note": "Ask the authors for it."})
    with pytest.raises(ClearbenchError) as err:
        load_encoder("mo")
    msg = str(err.value)
    assert str(home() / "weights" / "never-there.pth") in msg
    assert "$CB_TEST_WEIGHTS (not set)" in msg and "[weights] env / path" in msg and "Ask the authors" in msg


def test_env_variable_wins_over_path(monkeypatch):
    env_file = _weights_file(_tiny_state(1), "from-env.pth")
    _weights_file(_tiny_state(2), "default.pth")
    _card({"env": "CB_TEST_WEIGHTS", "path": "weights/default.pth"})
    monkeypatch.setenv("CB_TEST_WEIGHTS", str(env_file))
    enc = load_encoder("mo")
    assert enc.provenance["weights"] == str(env_file)
    assert enc.provenance["weights_sha256"] == W.file_sha256(env_file)


def test_hugging_face_file_comes_from_the_local_cache_only(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    card = parse_card({"name": "x", "family": "mambaout", "weights": {"hf_repo": "org/model", "hf_file": "w.pth"}})
    assert W.locate_weights(card).path is None  # not cached: not found, and no download attempted
    repo = tmp_path / "hub" / "models--org--model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    torch.save(_tiny_state(), snapshot / "w.pth")
    found = W.locate_weights(card)
    assert found.path == snapshot / "w.pth" and "Hugging Face cache: org/model/w.pth" in found.tried


def test_wrong_keys_fail_listing_missing_and_unexpected():
    state = _tiny_state()
    state.pop("stem.conv1.weight")
    state.pop("head.norm.bias")
    state["stages.0.blocks.0.extra.weight"] = torch.zeros(3)
    state["stem.conv2.bias"] = torch.zeros(5)  # wrong shape
    _card({"path": str(_weights_file(state))})
    with pytest.raises(InputError) as err:
        load_encoder("mo")
    msg = str(err.value)
    assert "2 missing key(s): stem.conv1.weight, head.norm.bias" in msg
    assert "1 unexpected key(s): stages.0.blocks.0.extra.weight" in msg
    assert "stem.conv2.bias (5,) vs model (8,)" in msg and str(home() / "weights" / "w.pth") in msg


def test_long_key_lists_are_cut_to_the_first_few():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(6)])
    with pytest.raises(
        InputError, match=r"12 missing key\(s\): 0.weight, 0.bias, 1.weight, 1.bias, 2.weight, \.\.\. \(\+7 more\)"
    ):
        W.load_strict(model, {}, "ckpt.pth")


def test_pickled_checkpoint_is_refused_unless_trusted():
    obj = {"state_dict": _tiny_state(), "args": argparse.Namespace(lr=0.1)}  # a Namespace needs real unpickling
    _card({"path": str(_weights_file(obj, "pickled.pth"))})
    with pytest.raises(InputError, match="--trust-checkpoint"):
        load_encoder("mo")
    enc = load_encoder("mo", trust_checkpoint=True)
    assert enc.dim == 32


def test_sha256_mismatch_is_refused_and_a_match_is_recorded():
    path = _weights_file(_tiny_state())
    digest = W.file_sha256(path)
    _card({"path": str(path), "sha256": "0" * 64})
    with pytest.raises(InputError, match="does not match the card's 0000"):
        load_encoder("mo")
    _card({"path": str(path), "sha256": digest.upper()})
    assert load_encoder("mo").provenance["weights_sha256"] == digest


def test_sha256_is_cached_by_size_and_mtime(monkeypatch):
    path = _weights_file(_tiny_state(), "hashed.pth")
    first = W.file_sha256(path)
    assert (home() / "cache" / "sha256.json").is_file()
    W._memory_cache.clear()

    def no_hashing(*_a, **_k):
        raise AssertionError("re-hashed a file whose size and mtime did not change")

    monkeypatch.setattr(W.hashlib, "sha256", no_hashing)
    assert W.file_sha256(path) == first  # from the on-disk cache
    monkeypatch.undo()
    torch.save(_tiny_state(5), path)
    os.utime(path, ns=(1, 1))
    assert W.file_sha256(path) != first


def test_containers_and_wrappers_are_unwrapped():
    t = torch.zeros(1)
    assert W.unwrap_checkpoint({"model": {"module.a.b": t}}) == {"a.b": t}
    assert W.unwrap_checkpoint({"state_dict": {"_orig_mod.a": t}}) == {"a": t}
    moco = {"module.base_encoder.a": t, "module.momentum_encoder.a": t, "module.predictor.x": t}
    assert W.unwrap_checkpoint({"epoch": 3, "state_dict": moco}) == {"a": t}
    assert set(W.unwrap_checkpoint(nn.Linear(1, 1))) == {"weight", "bias"}
    with pytest.raises(InputError, match="no state dict found: top-level keys are epoch, arch"):
        W.unwrap_checkpoint({"epoch": 1, "arch": "x"}, "f.pth")


def test_safetensors_and_unreadable_files(tmp_path):
    from safetensors.torch import save_file

    save_file(_tiny_state(), str(tmp_path / "w.safetensors"))
    assert set(W.read_state_dict(tmp_path / "w.safetensors")) == set(_tiny_state())
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=re.escape("junk.pth: not a readable")):
        W.read_state_dict(junk)


def _swap_in_place(path: Path, new_bytes: bytes) -> None:
    """Overwrite ``path`` with other bytes of the same length and set its mtime back, as ``touch -r`` would."""
    before = path.stat()
    assert len(new_bytes) == before.st_size
    with path.open("r+b") as fh:
        fh.write(new_bytes)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def _same_size_pair() -> tuple[bytes, bytes]:
    """Two checkpoints of the same architecture with different weights, and the same size in bytes."""
    a, b = home() / "a.pth", home() / "b.pth"
    torch.save(_tiny_state(1), a)
    torch.save(_tiny_state(2), b)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    assert len(data_a) == len(data_b) and data_a != data_b
    return data_a, data_b


def test_same_size_same_mtime_swap_is_refused_when_the_card_pins_a_sha256():
    data_a, data_b = _same_size_pair()
    path = home() / "weights" / "pinned.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data_a)
    _card({"path": str(path), "sha256": hashlib.sha256(data_a).hexdigest()})
    assert load_encoder("mo").provenance["weights_sha256"] == hashlib.sha256(data_a).hexdigest()  # now cached
    _swap_in_place(path, data_b)
    with pytest.raises(InputError, match="does not match the card's"):
        load_encoder("mo")
    W._memory_cache.clear()  # the on-disk cache is not fooled either
    with pytest.raises(InputError, match="does not match the card's"):
        load_encoder("mo")


def test_same_size_same_mtime_swap_is_recorded_as_the_new_file_when_nothing_is_pinned():
    data_a, data_b = _same_size_pair()
    path = home() / "weights" / "free.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data_a)
    _card({"path": str(path)})
    assert load_encoder("mo").provenance["weights_sha256"] == hashlib.sha256(data_a).hexdigest()
    _swap_in_place(path, data_b)
    enc = load_encoder("mo")
    assert enc.provenance["weights_sha256"] == hashlib.sha256(data_b).hexdigest()
    torch.testing.assert_close(enc.model.state_dict()["stem.conv1.weight"], _tiny_state(2)["stem.conv1.weight"])


def test_a_file_swapped_after_hashing_is_not_the_one_loaded(monkeypatch):
    """The digest and the tensors come from the same open file, even when the path points elsewhere meanwhile."""
    first = _weights_file(_tiny_state(1), "first.pth")
    other = _weights_file(_tiny_state(2), "other.pth")
    path = home() / "weights" / "current.pth"
    path.symlink_to(first)
    digest_1 = hashlib.sha256(first.read_bytes()).hexdigest()
    real = W._sha256_of_open

    def hash_then_swap(p, fh):
        digest = real(p, fh)
        path.unlink()
        path.symlink_to(other)  # the path now leads to other weights
        return digest

    monkeypatch.setattr(W, "_sha256_of_open", hash_then_swap)
    state, digest = W.load_verified(path, digest_1)
    assert digest == digest_1
    torch.testing.assert_close(state["stem.conv1.weight"], _tiny_state(1)["stem.conv1.weight"])


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {home() / 'pwned'}",))


def test_a_pickle_that_would_run_code_is_refused_saying_why(tmp_path):
    import pickle

    zipped = tmp_path / "evil.pth"
    torch.save({"state_dict": _tiny_state(), "x": _RunsCode()}, zipped)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_RunsCode(), protocol=4))
    for path in (zipped, raw):
        with pytest.raises(InputError) as err:
            W.read_state_dict(path)
        msg = str(err.value)
        assert "needs pickle (pass --trust-checkpoint only for files you trust)" in msg, msg
        assert f"{os.name}.system" in msg and str(path) in msg
    assert not (home() / "pwned").exists()


def test_a_trusted_checkpoint_with_a_class_that_cannot_be_imported_names_it(tmp_path, capsys):
    import sys
    import types

    module = types.ModuleType("gone_training_lib")
    thing = type("TrainArgs", (), {"__module__": "gone_training_lib"})
    module.TrainArgs = thing
    sys.modules["gone_training_lib"] = module
    try:
        path = _weights_file({"state_dict": _tiny_state(), "args": thing()}, "gone.pth")
    finally:
        del sys.modules["gone_training_lib"]
    expected = (
        "pickled class TrainArgs from module gone_training_lib cannot be imported "
        "(No module named 'gone_training_lib'): install gone_training_lib or re-save the state_dict"
    )
    with pytest.raises(InputError) as err:
        W.read_state_dict(path, trust_checkpoint=True)
    assert str(err.value) == f"{path}: {expected}"

    from clearbench.cli import main

    _card({"path": str(path)})
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", "-e", "mo", "-d", "deeplesion", "--root", str(tmp_path), "--trust-checkpoint"])
    assert exit_info.value.code == 1
    err_text = capsys.readouterr().err.strip()
    assert err_text.count("\n") == 0 and expected in err_text and "Traceback" not in err_text
