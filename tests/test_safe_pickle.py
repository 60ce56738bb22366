"""The pickle interpreter runs no code from the data: plain data round-trips, payloads stay inert.

Each malicious payload below is a hand-assembled pickle that, loaded by ``pickle.loads``,
creates a file; the interpreter (and ``load_checkpoint`` on a torch archive holding it) must
leave that file uncreated. A few payloads are also run with ``pickle.loads`` to show they are live.
"""

from __future__ import annotations

import io
import pickle
import random
import zipfile
from collections import OrderedDict

import pytest
import torch

from robustbench_pp.models import CheckpointError, load_checkpoint
from robustbench_pp.models.safe_pickle import GlobalRef, Opaque, UnsafePickleError, as_mapping, loads
from robustbench_pp.models.torch_archive import load_torch_archive


def _random_value(rng: random.Random, depth: int = 0):
    leaves = [lambda: rng.randint(-10**20, 10**20), lambda: rng.random() * 1e6, lambda: "é" * rng.randint(0, 3) + "x",
              lambda: bytes(rng.randrange(256) for _ in range(rng.randint(0, 4))), lambda: None, lambda: True,
              lambda: False, lambda: complex(rng.random(), -1.5), lambda: bytearray(b"ab")]
    if depth > 3 or rng.random() < 0.4:
        return rng.choice(leaves)()
    kind = rng.choice(["list", "tuple", "dict", "set", "frozenset", "ordered"])
    items = [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    hashable = [i for i in items if isinstance(i, (int, float, str, bytes, tuple, frozenset, complex, type(None)))
                and not (isinstance(i, tuple) and any(isinstance(v, (list, dict, set, bytearray)) for v in i))]
    return {"list": lambda: items, "tuple": lambda: tuple(items),
            "dict": lambda: {f"k{i}": v for i, v in enumerate(items)},
            "set": lambda: set(hashable), "frozenset": lambda: frozenset(hashable),
            "ordered": lambda: OrderedDict((f"k{i}", v) for i, v in enumerate(items))}[kind]()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_roundtrips_in_every_protocol(protocol):
    rng = random.Random(protocol)
    for _ in range(40):
        value = _random_value(rng)
        shared = [1, 2]
        value = {"value": value, "shared": (shared, shared)}  # memo references
        got = loads(pickle.dumps(value, protocol=protocol))
        assert got == value
        assert got["shared"][0] is got["shared"][1]


class _Augmentation:
    """Stands for an augmentation object of a training run (its class is never imported on load)."""

    def __init__(self):
        self.severity, self.ops = 3, ["rotate", "shear"]


def test_unknown_objects_become_inert_records():
    data = pickle.dumps({"aug": _Augmentation(), "fn": len}, protocol=2)
    got = loads(data)
    assert isinstance(got["aug"], Opaque) and got["aug"].name.endswith("_Augmentation")
    assert got["aug"].state == {"severity": 3, "ops": ["rotate", "shear"]}
    assert got["fn"] == GlobalRef("builtins.len")
    assert as_mapping(got["aug"]) == {"severity": 3, "ops": ["rotate", "shear"]}


def _archive(pickle_bytes: bytes, path) -> None:
    """A zip archive laid out as torch.save writes it, holding ``pickle_bytes`` as data.pkl."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")


def _payloads(target: str) -> dict[str, bytes]:
    """Pickles that create ``target`` when loaded with pickle.loads (protocol 0-2 opcodes by hand)."""
    shell = f"touch {target}".encode()
    code = f"open({target!r}, 'w').close()".encode()
    proto = b"\x80\x02"

    def string(value: bytes) -> bytes:  # SHORT_BINUNICODE is protocol 4; X (BINUNICODE) works from protocol 1
        return b"X" + len(value).to_bytes(4, "little") + value

    return {
        "os.system via REDUCE": proto + b"cos\nsystem\n" + string(shell) + b"\x85R.",
        "posix.system via REDUCE": proto + b"cposix\nsystem\n" + string(shell) + b"\x85R.",
        "builtins.eval": proto + b"cbuiltins\neval\n" + string(code) + b"\x85R.",
        "builtins.exec": proto + b"cbuiltins\nexec\n" + string(code) + b"\x85R.",
        "subprocess.call": proto + b"csubprocess\ncall\n" + string(b"touch") + string(target.encode())
                           + b"\x86\x85R.",
        "subprocess.Popen": proto + b"csubprocess\nPopen\n" + string(b"touch") + string(target.encode())
                            + b"\x86\x85R.",
        # getattr(__import__('os'), 'system')('touch ...')
        "getattr chain": proto + b"cbuiltins\ngetattr\ncbuiltins\n__import__\n" + string(b"os") + b"\x85R"
                         + string(b"system") + b"\x86R" + string(shell) + b"\x85R.",
        # protocol 0 INST: instantiates os.system('touch ...')
        "INST": b"(" + b"S'" + shell + b"'\nios\nsystem\n.",
        # OBJ: class and args after MARK
        "OBJ": proto + b"(cos\nsystem\n" + string(shell) + b"o.",
        # NEWOBJ then BUILD: an instance of a class whose __setstate__ writes the file
        "NEWOBJ + BUILD": proto + b"c" + __name__.encode() + b"\nSetStateBomb\n)\x81}" + string(b"target")
                          + string(target.encode()) + b"sb.",
    }


def _payload_ids():
    return list(_payloads("/x"))


@pytest.mark.parametrize("name", _payload_ids())
def test_malicious_payloads_run_nothing(tmp_path, name):
    target = tmp_path / "pwned"
    payload = _payloads(str(target))[name]
    try:
        loads(payload)
    except UnsafePickleError:
        pass
    assert not target.exists()
    _archive(payload, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil.pt")
    # Inside a Lightning checkpoint's hyper-parameters the payload is just an inert record.
    lightning = payload[:-1].replace(b"\x80\x02", b"", 1) if payload.startswith(b"\x80\x02") else None
    if lightning is not None:
        wrapped = (b"\x80\x02}(X\x10\x00\x00\x00hyper_parameters}X\x0c\x00\x00\x00augmentation"
                   + lightning + b"sX\n\x00\x00\x00state_dict}u.")
        assert isinstance(loads(wrapped)["hyper_parameters"]["augmentation"], Opaque)
        _archive(wrapped, tmp_path / "run.ckpt")
        with pytest.raises(CheckpointError, match="is not resnet18/34/50"):
            load_checkpoint(tmp_path / "run.ckpt")
    assert not target.exists()


@pytest.mark.parametrize("name", ["os.system via REDUCE", "builtins.exec", "getattr chain", "INST", "OBJ"])
def test_the_payloads_are_live(tmp_path, name):
    """Without the interpreter the same bytes do create the file: the tests above can fail."""
    target = tmp_path / "pwned"
    try:
        pickle.loads(_payloads(str(target))[name])
    except Exception:  # noqa: BLE001 - some payloads return odd objects; only the side effect matters
        pass
    assert target.exists()


class SetStateBomb:
    """Its ``__setstate__`` writes a file: ``pickle.loads`` of an instance runs it."""

    def __setstate__(self, state):
        open(state["target"], "w").close()


def test_setstate_of_a_real_class_is_never_called(tmp_path):
    target = tmp_path / "pwned"
    payload = _payloads(str(target))["NEWOBJ + BUILD"]
    pickle.loads(payload)
    assert target.exists(), "the payload is live"
    target.unlink()
    got = loads(payload)
    assert isinstance(got, Opaque) and got.name.endswith("SetStateBomb") and got.state == {"target": str(target)}
    assert not target.exists()


def test_archive_tensors_match_torch_load(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    value = {"view": base[:, 2], "half": torch.randn(3, 5).half(), "bf16": torch.randn(4).bfloat16(),
             "long": torch.arange(5), "bool": torch.tensor([True, False]), "empty": torch.zeros(0, 3),
             "scalar": torch.tensor(2.5), "param": torch.nn.Parameter(torch.ones(2)), "base": base}
    torch.save(value, tmp_path / "t.pt")
    got = load_torch_archive(tmp_path / "t.pt")
    for key, tensor in value.items():
        expected = tensor.detach()
        assert torch.equal(got[key], expected) and got[key].dtype == expected.dtype and got[key].shape == expected.shape
    assert got["view"].stride() == value["view"].stride()
    assert got["view"].untyped_storage().data_ptr() == got["base"].untyped_storage().data_ptr()  # shared, as saved


def test_archive_refuses_storages_that_lie(tmp_path):
    torch.save({"w": torch.ones(4)}, tmp_path / "t.pt")
    with zipfile.ZipFile(tmp_path / "t.pt") as archive:
        records = {name: archive.read(name) for name in archive.namelist()}
    data_pkl = next(name for name in records if name.endswith("data.pkl"))
    # Claim a view past the end of the 4-element storage.
    records[data_pkl] = records[data_pkl].replace(b"K\x04\x85", b"K\x09\x85", 1)
    with zipfile.ZipFile(tmp_path / "bad.pt", "w") as archive:
        for name, payload in records.items():
            archive.writestr(name, payload)
    with pytest.raises(UnsafePickleError, match="reaches element"):
        load_torch_archive(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_malformed_pickles_are_errors_not_crashes():
    for data in (b"", b"\x80\x02", b"\x80\x02(.", b"\x80\x02]q\x00h\x05.", b"\x80\x02K\x01K\x02s.", b"garbage"):
        with pytest.raises(UnsafePickleError):
            loads(data)
    with pytest.raises(UnsafePickleError, match="persistent id"):
        loads(b"\x80\x02X\x01\x00\x00\x00aQ.")
    buffer = io.BytesIO()
    pickle.Pickler(buffer, protocol=5, buffer_callback=lambda b: False).dump(pickle.PickleBuffer(b"abc"))
    with pytest.raises(UnsafePickleError, match="NEXT_BUFFER"):
        loads(buffer.getvalue())
