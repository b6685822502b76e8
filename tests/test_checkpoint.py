"""Checkpoints that cannot lie: atomic writes, a checksum over every value, clear errors for every kind of damage.

Every damaged file must give one message that names the file, says it is damaged or not a minildm
checkpoint, and says what to do, and never suggests torch.load(weights_only=False).
"""

import random
import struct
import zipfile

import pytest
import torch

from minildm import utils as ck
from minildm.train import loop
from minildm.train.profiles import get_profile

WHAT_TO_DO = "train again from the previous checkpoint"


@pytest.fixture
def saved(tmp_path):
    """A small checkpoint with one recognisable weight tensor (4,096 × 0.5)."""
    path = tmp_path / "model.pt"
    ck.save_checkpoint({"kind": "toy", "config": {"width": 4}, "state_dict": {"w": torch.full((4096,), 0.5)},
                        "history": [{"step": 1, "loss": 0.25}]}, path)
    return path


def expect_damage(path, *words):
    with pytest.raises(ck.CheckpointError) as e:
        ck.load_checkpoint(path)
    msg = str(e.value)
    assert str(path) in msg and WHAT_TO_DO in msg and "weights_only" not in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_round_trip_keeps_every_value_and_the_kind_check(saved):
    ckpt = ck.load_checkpoint(saved, kind="toy")
    assert torch.equal(ckpt["state_dict"]["w"], torch.full((4096,), 0.5))
    assert ckpt["config"] == {"width": 4} and ckpt["history"] == [{"step": 1, "loss": 0.25}]
    assert "checksum" not in ckpt                                  # verified and removed on load
    with pytest.raises(ValueError, match="holds a 'toy' checkpoint, expected 'ldm'"):
        ck.load_checkpoint(saved, kind="ldm")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        ck.load_checkpoint(saved.parent / "missing.pt")


def test_the_checksum_covers_every_value():
    base = {"kind": "toy", "state_dict": {"w": torch.ones(3)}, "history": [{"loss": 0.5}], "rng": (1, (2, 3), None)}
    d = ck.checkpoint_digest(base)
    assert d == ck.checkpoint_digest({**base}) and len(d) == 64
    changed = [{**base, "state_dict": {"w": torch.tensor([1.0, 1.0, 1.0000001])}},
               {**base, "state_dict": {"w": torch.ones(3, dtype=torch.float64)}},
               {**base, "state_dict": {"w": torch.ones(1, 3)}},
               {**base, "history": [{"loss": 0.5000001}]},
               {**base, "rng": (1, (2, 4), None)},
               {**base, "kind": "ldm"}]
    assert len({ck.checkpoint_digest(c) for c in changed} | {d}) == len(changed) + 1


def test_a_flipped_byte_inside_a_weight_is_caught(saved):
    raw = bytearray(saved.read_bytes())
    pattern = struct.pack("<f", 0.5) * 16                          # the stored bytes of the 0.5 weights
    i = raw.index(pattern) + 4 * 100 + 3
    raw[i] ^= 0x40                                                 # 0.5 -> 2.0 in one element
    saved.write_bytes(bytes(raw))
    ckpt = torch.load(saved, weights_only=True)                    # torch itself does not notice ...
    assert float(ckpt["state_dict"]["w"].max()) != 0.5
    expect_damage(saved, "damaged", "checksum")                    # ... the checksum does


def test_sixty_four_flipped_bytes_are_caught(saved):
    raw = bytearray(saved.read_bytes())
    start = raw.index(struct.pack("<f", 0.5) * 16)
    rng = random.Random(0)
    for i in rng.sample(range(start, start + 4 * 4096), 64):
        raw[i] ^= 0xFF
    saved.write_bytes(bytes(raw))
    expect_damage(saved, "damaged")


def test_an_empty_file(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    expect_damage(empty, "damaged or not a minildm checkpoint")


def test_a_text_file(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("these are my notes, not a checkpoint\n")
    expect_damage(text, "not a minildm checkpoint")


def test_a_truncated_file(saved):
    saved.write_bytes(saved.read_bytes()[:-2000])
    expect_damage(saved, "damaged")


def test_damage_inside_the_pickle(saved):
    raw = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as z:                              # where data.pkl's bytes start in the file
        info = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
    header = raw[info.header_offset:info.header_offset + 30]
    start = info.header_offset + 30 + struct.unpack("<H", header[26:28])[0] + struct.unpack("<H", header[28:30])[0]
    raw[start + 2:start + 6] = b"\xff\xfe\xfd\xfc"                 # invalid pickle opcodes
    saved.write_bytes(bytes(raw))
    msg = expect_damage(saved, "damaged or not a minildm checkpoint")
    assert "Unpickl" not in msg


def test_a_foreign_torch_file(tmp_path):
    foreign = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.ones(2)}, foreign)           # a plain state dict, not ours
    expect_damage(foreign, "not a minildm checkpoint")


def test_a_legacy_checkpoint_without_checksum_loads_with_a_warning(tmp_path):
    old = tmp_path / "old.pt"
    torch.save({"kind": "toy", "config": {}, "state_dict": {"w": torch.ones(2)}}, old)
    with pytest.warns(UserWarning, match="no checksum"):
        assert torch.equal(ck.load_checkpoint(old)["state_dict"]["w"], torch.ones(2))


def test_atomic_write_leaves_the_previous_checkpoint(saved, monkeypatch):
    before = saved.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        ck.save_checkpoint({"kind": "toy", "state_dict": {}}, saved)
    assert saved.read_bytes() == before                            # the old checkpoint is untouched
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # no temporary file left behind


def test_non_finite_or_absurd_weights_are_never_written(saved):
    before = saved.read_bytes()
    for bad, words in (({"w": torch.tensor([1.0, float("nan")])}, "state_dict.w (1 of 2 values NaN/inf)"),
                       ({"w": torch.tensor([float("inf")])}, "NaN/inf"),
                       ({"w": torch.tensor([3e7])}, "max |w| = 3e+07")):
        with pytest.raises(ck.UnsafeWeightsError) as e:
            ck.save_checkpoint({"kind": "toy", "state_dict": bad}, saved, weights=("state_dict",))
        assert words in str(e.value) and "Nothing was written" in str(e.value)
        assert saved.read_bytes() == before
    # large values outside the model weights (e.g. Adam's second moments) are fine; NaN anywhere is not
    ck.save_checkpoint({"kind": "toy", "state_dict": {}, "optimizer": {"v": torch.tensor([1e9])}}, saved,
                       weights=("state_dict",))
    with pytest.raises(ck.UnsafeWeightsError, match="optimizer.v"):
        ck.save_checkpoint({"kind": "toy", "state_dict": {}, "optimizer": {"v": torch.tensor([float("nan")])}},
                           saved, weights=("state_dict",))


def test_stale_temporaries_are_found_by_name(tmp_path):
    for name in (".ldm.pt.a1.tmp", ".ldm.pt.b2.tmp", ".autoencoder.pt.c3.tmp", "ldm.pt"):
        (tmp_path / name).write_bytes(b"x")
    removed = loop.remove_stale_temporaries(tmp_path, "ldm.pt")
    assert sorted(p.name for p in removed) == [".ldm.pt.a1.tmp", ".ldm.pt.b2.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".autoencoder.pt.c3.tmp", "ldm.pt"]
    assert loop.remove_stale_temporaries(tmp_path / "missing", "ldm.pt") == []


def test_config_mismatch_lists_fields_and_says_how_to_go_on():
    with pytest.raises(ValueError, match=r"ch: checkpoint=32 current=64[\s\S]*--no-resume[\s\S]*from_checkpoint"):
        loop.check_config_matches({"ch": 32, "z": 4}, {"ch": 64, "z": 4})
    loop.check_config_matches({"m": [1, 2]}, {"m": (1, 2)})           # lists and tuples are the same config


def test_configs_round_trip_through_a_checkpoint(tmp_path):
    cfg = get_profile("ci").ae
    ck.save_checkpoint({"kind": "toy", "config": cfg, "state_dict": {}}, tmp_path / "c.pt")
    assert ck.config_from_dict(type(cfg), ck.load_checkpoint(tmp_path / "c.pt")["config"]) == cfg
    # fields of other configs (old checkpoints stored the loss and training fields with the architecture) are left out
    assert ck.config_from_dict(type(cfg), {**ck.to_plain(cfg), "lr": 1e-3, "flux_capacitor": 1}) == cfg


def test_rng_state_round_trip():
    state = loop.rng_state()
    a = (torch.rand(4), random.random())
    loop.set_rng_state(state)
    assert torch.equal(torch.rand(4), a[0]) and random.random() == a[1]
