"""The zip archives ``torch.save`` writes (PyTorch ≥ 1.6), read without running their code.

An archive holds ``<name>/data.pkl`` (the pickled object) and one record ``<name>/data/<key>``
per storage, referenced from the pickle by persistent ids ``("storage", torch.<Kind>Storage,
key, location, numel)``. :func:`load_torch_archive` interprets ``data.pkl`` with
:func:`robustbench_pp.models.safe_pickle.loads`, adding to its allow-list only the functions
that rebuild tensors (written here: a bounds-checked view of a storage) and the storage kinds
(which stand for a dtype); every other global stays an inert
:class:`~robustbench_pp.models.safe_pickle.Opaque` record. Storages land on the CPU whatever
device they were saved from.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from robustbench_pp.models.safe_pickle import GlobalRef, Opaque, Rebuild, UnsafePickleError, call, loads

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}


@dataclass(frozen=True)
class StorageKind:
    """``torch.<Kind>Storage`` named in a storage's persistent id: only its dtype is used."""

    dtype: torch.dtype


def _int_tuple(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int and v >= 0 for v in value):
        raise UnsafePickleError(f"tensor {what} must be a tuple of non-negative ints, got {value!r}")
    return tuple(value)


def rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> torch.Tensor:
    """``torch._utils._rebuild_tensor(_v2)``: a bounds-checked view of one of the archive's storages.

    The trailing arguments (requires_grad, backward hooks, metadata) are ignored: weights only.
    """
    if not isinstance(storage, torch.Tensor) or type(storage_offset) is not int or storage_offset < 0:
        raise UnsafePickleError("a tensor must view a storage of the archive at a non-negative offset")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise UnsafePickleError(f"tensor size {size} and stride {stride} differ in length")
    if all(size):
        last = storage_offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= storage.numel():
            raise UnsafePickleError(f"a tensor of size {size} reaches element {last} of a storage of {storage.numel()}")
    return storage.as_strided(size, stride, storage_offset)


def rebuild_parameter(data, *_ignored) -> torch.Tensor:
    """``torch._utils._rebuild_parameter(_with_state)``: the weights as a plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise UnsafePickleError("a parameter must wrap a tensor")
    return data


def rebuild_from_type(func, new_type, args, _state=None):
    """``torch._tensor._rebuild_from_type_v2``: plain tensors and parameters; other types stay opaque."""
    if isinstance(new_type, GlobalRef) and new_type.name in ("torch.Tensor", "torch.nn.parameter.Parameter"):
        if isinstance(func, Rebuild) and isinstance(args, tuple):
            return call(func, args)
    return Opaque("torch._tensor._rebuild_from_type_v2", (func, new_type, args))


#: The torch names an archive's pickle may use (added to safe_pickle's base allow-list).
TORCH_ALLOWED = {
    "torch._utils._rebuild_tensor": rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": rebuild_tensor,
    "torch._utils._rebuild_parameter": rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": rebuild_from_type,
    **{f"torch.{name}": StorageKind(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


def is_torch_archive(path: str | Path) -> bool:
    """True for a zip file (what ``torch.save`` writes since PyTorch 1.6)."""
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def load_torch_archive(path: str | Path):
    """The object a ``torch.save`` archive holds, read without running any of its code.

    Each storage record is read once, at most the size its id claims, and shared by the
    tensors that view it; big-endian archives are byte-swapped.

    Returns:
        The unpickled object: containers, numbers, strings, CPU tensors, and
        :class:`~robustbench_pp.models.safe_pickle.Opaque` records for everything else.

    Raises:
        UnsafePickleError: not a torch archive, a malformed pickle, or storages that do not
            match their records.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise UnsafePickleError(f"not a torch archive: {exc}") from None
    with archive:
        names = archive.namelist()
        pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise UnsafePickleError(f"expected one <archive>/data.pkl in the zip file, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        big_endian = f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() == b"big"
        storages: dict[str, torch.Tensor] = {}

        def storage(pid):
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
                raise UnsafePickleError(f"unknown persistent id {pid!r}")
            _, kind, key, _location, numel = pid
            if not isinstance(kind, StorageKind) or not isinstance(key, str) or type(numel) is not int or numel < 0:
                raise UnsafePickleError(f"malformed storage id {pid!r}")
            if key not in storages:
                storages[key] = _read_storage(archive, f"{prefix}data/{key}", kind.dtype, numel, big_endian)
            elif storages[key].dtype != kind.dtype:
                raise UnsafePickleError(f"storage {key} is referenced with two dtypes")
            return storages[key]

        return loads(archive.read(pickles[0]), allowed=TORCH_ALLOWED, persistent_load=storage)


def _read_storage(archive: zipfile.ZipFile, name: str, dtype: torch.dtype, numel: int, big_endian: bool) -> torch.Tensor:
    itemsize = torch.empty((), dtype=dtype).element_size()
    expected = numel * itemsize
    try:
        with archive.open(name) as handle:
            raw = bytearray(handle.read(expected + 1))  # at most what the id claims, plus one byte to see excess
    except KeyError:
        raise UnsafePickleError(f"storage record {name} is missing") from None
    if len(raw) != expected:
        raise UnsafePickleError(f"storage record {name} holds {len(raw)} bytes, its id says {expected}")
    if numel == 0:
        return torch.empty(0, dtype=dtype)
    flat = torch.frombuffer(raw, dtype=torch.uint8)
    if big_endian and itemsize > 1:
        flat = flat.view(numel, itemsize).flip(1).contiguous().view(-1)
    return flat.view(dtype)
