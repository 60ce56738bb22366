"""Read pickles without running any code from them.

A pickle is a small program: its ``GLOBAL`` opcodes name any importable object and ``REDUCE``,
``NEWOBJ``, ``INST``, ``OBJ`` and ``BUILD`` call it. ``pickle.load`` executes that program, so
loading an untrusted checkpoint can run anything. :func:`loads` interprets the opcodes itself
(decoded by :func:`pickletools.genops`, which only parses) and never imports or calls a global
named by the data:

- an allow-list maps a few names to functions written here that rebuild plain data
  (``OrderedDict``, ``set``, ``frozenset``, ``bytes``, ``bytearray``, ``complex``, protocol 2's latin-1
  ``bytes``); callers add their own (:mod:`robustbench_pp.models.torch_archive`: tensors);
- every other global becomes a :class:`GlobalRef` (a name, never resolved), and a "call" of it
  becomes an :class:`Opaque` record of the name and its arguments, items and state. Nothing
  about it is ever called: ``BUILD`` stores the state instead of calling ``__setstate__``,
  ``SETITEMS``/``APPENDS`` store the items (a ``dict`` subclass such as Lightning's
  ``AttributeDict`` keeps its entries).

This is what lets the PushPull-Net training code's Lightning checkpoints load: a OneCycleLR
state saved by PyTorch 2.1 holds the bound method ``anneal_func`` (pickled as
``getattr(scheduler, name)``), and the AutoAugment/AugMix/PRIME runs keep the augmentation
object in ``hyper_parameters``; both become inert :class:`Opaque` records.
"""

from __future__ import annotations

import pickletools
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class UnsafePickleError(ValueError):
    """The data is not a pickle this module can interpret (malformed, or an unsupported opcode)."""


@dataclass(frozen=True)
class GlobalRef:
    """A global named by a pickle (``module.name``), never imported."""

    name: str

    def __repr__(self) -> str:
        return f"<global {self.name}>"


@dataclass(eq=False)
class Opaque:
    """An object the pickle would have built by calling ``name``; only its pieces are kept.

    Attributes:
        name: the dotted global the pickle names (``torchvision.transforms.autoaugment.AutoAugment``).
        args: the positional arguments of the call (``REDUCE``/``NEWOBJ``/``INST``/``OBJ``).
        state: what ``BUILD`` would have passed to ``__setstate__`` (usually the ``__dict__``).
        items: entries set by ``SETITEM(S)`` (dict subclasses).
        list_items: entries added by ``APPEND(S)`` (list subclasses).
    """

    name: str
    args: tuple = ()
    state: Any = None
    items: dict = field(default_factory=dict)
    list_items: list = field(default_factory=list)

    @property
    def short_name(self) -> str:
        """The last part of the name (``AutoAugment``)."""
        return self.name.rsplit(".", 1)[-1]

    def __repr__(self) -> str:
        return f"<{self.name} object, not loaded>"


# Python 2 module names that protocol 0-2 pickles use for builtins.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _latin1_bytes(text, encoding="latin1") -> bytes:
    """``_codecs.encode(text, "latin1")``: how protocol 2 writes ``bytes``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode is allowed only as protocol 2's latin-1 bytes")
    return text.encode("latin-1")


def _container(kind: type) -> Callable:
    def build(*args):
        if len(args) > 1 or (args and not isinstance(args[0], (list, tuple, dict, set, frozenset, str, bytes))):
            raise UnsafePickleError(f"{kind.__name__} rebuilt from unexpected arguments")
        if kind is bytearray and len(args) == 1 and isinstance(args[0], str):
            return bytearray(args[0].encode("latin-1"))
        return kind(*args)

    return build


def _complex(real=0.0, imag=0.0) -> complex:
    if not all(isinstance(v, (int, float)) for v in (real, imag)):
        raise UnsafePickleError("complex rebuilt from non-numbers")
    return complex(real, imag)


#: Names every pickle may call, each mapped to a function written here (never the original).
BASE_ALLOWED: Mapping[str, Callable] = {
    "collections.OrderedDict": _container(OrderedDict),
    "builtins.set": _container(set),
    "builtins.frozenset": _container(frozenset),
    "builtins.bytes": _container(bytes),
    "builtins.bytearray": _container(bytearray),
    "builtins.complex": _complex,
    "_codecs.encode": _latin1_bytes,
}


class Rebuild:
    """An allow-listed function as a pickle sees it: only :func:`loads` creates these, so a
    value of this type on the stack is always one of ours."""

    __slots__ = ("function",)

    def __init__(self, function: Callable):
        self.function = function

    def __repr__(self) -> str:
        return f"<rebuild {self.function.__name__}>"


def call(callee, args) -> Any:
    """What calling ``callee(*args)`` gives when a pickle asks: an allowed function runs,
    anything else becomes an :class:`Opaque` record (nothing is called).

    Raises:
        UnsafePickleError: arguments that the allowed function refuses.
    """
    if not isinstance(args, tuple):
        raise UnsafePickleError(f"call arguments must be a tuple, got {type(args).__name__}")
    if isinstance(callee, Rebuild):
        try:
            return callee.function(*args)
        except UnsafePickleError:
            raise
        except (TypeError, ValueError, RuntimeError) as exc:
            raise UnsafePickleError(f"bad arguments to {callee.function.__name__}: {exc}") from None
    if isinstance(callee, GlobalRef):
        return Opaque(callee.name, args)
    return Opaque(f"call of {callee!r}", args)


def _set_items(target, pairs: list) -> None:
    if isinstance(target, dict):
        try:
            target.update(pairs)
        except TypeError as exc:
            raise UnsafePickleError(f"unhashable dictionary key: {exc}") from None
    elif isinstance(target, Opaque):
        target.items.update((k if _hashable(k) else repr(k), v) for k, v in pairs)
    else:
        raise UnsafePickleError(f"SETITEM(S) on a {type(target).__name__}")


def _hashable(value) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _append(target, values: list) -> None:
    if isinstance(target, list):
        target.extend(values)
    elif isinstance(target, Opaque):
        target.list_items.extend(values)
    else:
        raise UnsafePickleError(f"APPEND(S) on a {type(target).__name__}")


def _build(target, state) -> None:
    """``BUILD``: an opaque object keeps the state; a dict drops it (a state_dict's ``_metadata``)."""
    if isinstance(target, Opaque):
        target.state = state
    elif not isinstance(target, dict) and state is not None:
        raise UnsafePickleError(f"BUILD (__setstate__) on a {type(target).__name__}")


class _Machine:
    """The pickle virtual machine, over opcodes decoded by :func:`pickletools.genops`."""

    def __init__(self, allowed: Mapping[str, Any], persistent_load: Callable[[Any], Any] | None):
        self.allowed = allowed
        self.stack: list = []
        self.marks: list[list] = []
        self.memo: dict = {}
        self.persistent_load = persistent_load

    def resolve(self, module: str, name: str):
        """What a global stands for: an allowed function, an allowed constant, or a bare name."""
        module = _PY2_MODULES.get(module, module)
        dotted = f"{module}.{name}"
        if dotted not in self.allowed:
            return GlobalRef(dotted)
        value = self.allowed[dotted]
        return Rebuild(value) if callable(value) else value

    def pop_mark(self) -> list:
        if not self.marks:
            raise UnsafePickleError("MARK expected on the stack")
        items, self.stack = self.stack, self.marks.pop()
        return items

    def pop(self):
        if not self.stack:
            raise UnsafePickleError("pickle stack underflow")
        return self.stack.pop()

    def top(self):
        if not self.stack:
            raise UnsafePickleError("pickle stack underflow")
        return self.stack[-1]

    def run(self, data: bytes):
        try:
            for opcode, arg, _pos in pickletools.genops(data):
                name = opcode.name
                if name == "STOP":
                    if len(self.stack) != 1 or self.marks:
                        raise UnsafePickleError("STOP with a malformed stack")
                    return self.stack.pop()
                handler = _HANDLERS.get(name)
                if handler is None:
                    raise UnsafePickleError(f"unsupported pickle opcode {name}")
                handler(self, arg)
        except UnsafePickleError:
            raise
        except (ValueError, KeyError, IndexError, TypeError, EOFError) as exc:
            raise UnsafePickleError(f"malformed pickle: {exc}") from None
        raise UnsafePickleError("pickle ends without STOP")

    # ---- opcode groups ------------------------------------------------------------------------

    def push(self, value) -> None:
        self.stack.append(value)

    def mark(self, _arg) -> None:
        self.marks.append(self.stack)
        self.stack = []

    def put(self, index) -> None:
        self.memo[index] = self.top()

    def memoize(self, _arg) -> None:
        self.memo[len(self.memo)] = self.top()

    def get(self, index) -> None:
        if index not in self.memo:
            raise UnsafePickleError(f"memo entry {index} referenced before it was stored")
        self.push(self.memo[index])

    def global_(self, arg: str) -> None:
        module, _, name = arg.partition(" ")
        self.push(self.resolve(module, name))

    def stack_global(self, _arg) -> None:
        name, module = self.pop(), self.pop()
        if not isinstance(module, str) or not isinstance(name, str):
            raise UnsafePickleError("STACK_GLOBAL needs two strings")
        self.push(self.resolve(module, name))

    def reduce(self, _arg) -> None:
        args = self.pop()
        self.push(call(self.pop(), args))

    def newobj(self, _arg) -> None:
        args = self.pop()
        self.push(call(self.pop(), args))

    def newobj_ex(self, _arg) -> None:
        kwargs, args, cls = self.pop(), self.pop(), self.pop()
        if kwargs:  # keyword construction is never needed by the allowed rebuilds
            self.push(Opaque(cls.name if isinstance(cls, GlobalRef) else repr(cls), args, state=kwargs))
        else:
            self.push(call(cls, args))

    def inst(self, arg: str) -> None:
        module, _, name = arg.partition(" ")
        self.push(call(self.resolve(module, name), tuple(self.pop_mark())))

    def obj(self, _arg) -> None:
        items = self.pop_mark()
        if not items:
            raise UnsafePickleError("OBJ without a class")
        self.push(call(items[0], tuple(items[1:])))

    def build(self, _arg) -> None:
        state = self.pop()
        _build(self.top(), state)

    def persid(self, pid) -> None:
        if self.persistent_load is None:
            raise UnsafePickleError("a persistent id outside a torch archive")
        self.push(self.persistent_load(pid))

    def binpersid(self, _arg) -> None:
        self.persid(self.pop())

    def tuple_of(self, count: int) -> None:
        items = [self.pop() for _ in range(count)]
        self.push(tuple(reversed(items)))

    def append(self, _arg) -> None:
        value = self.pop()
        _append(self.top(), [value])

    def appends(self, _arg) -> None:
        items = self.pop_mark()
        _append(self.top(), items)

    def setitem(self, _arg) -> None:
        value, key = self.pop(), self.pop()
        _set_items(self.top(), [(key, value)])

    def setitems(self, _arg) -> None:
        items = self.pop_mark()
        _set_items(self.top(), _pairs(items))

    def additems(self, _arg) -> None:
        items = self.pop_mark()
        _add_items(self.top(), items)

    def discard(self, _arg) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self.pop_mark()


def _push_constant(value):
    return lambda machine, _arg: machine.push(value)


def _push_text(machine: _Machine, arg) -> None:
    """Protocol 0-2 ``str`` opcodes; Python 3 reads them as latin-1 text."""
    machine.push(arg.decode("latin-1") if isinstance(arg, bytes) else arg)


_HANDLERS: dict[str, Callable[[_Machine, Any], None]] = {
    "PROTO": lambda m, a: None, "FRAME": lambda m, a: None,
    "MARK": _Machine.mark, "POP": _Machine.discard, "POP_MARK": lambda m, a: m.pop_mark(),
    "DUP": lambda m, a: m.push(m.top()),
    "NONE": _push_constant(None), "NEWTRUE": _push_constant(True), "NEWFALSE": _push_constant(False),
    **{op: _Machine.push for op in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT",
                                    "BINFLOAT", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
                                    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8")},
    **{op: _push_text for op in ("STRING", "BINSTRING", "SHORT_BINSTRING")},
    "EMPTY_TUPLE": lambda m, a: m.push(()), "TUPLE": lambda m, a: m.push(tuple(m.pop_mark())),
    "TUPLE1": lambda m, a: m.tuple_of(1), "TUPLE2": lambda m, a: m.tuple_of(2), "TUPLE3": lambda m, a: m.tuple_of(3),
    "EMPTY_LIST": lambda m, a: m.push([]), "LIST": lambda m, a: m.push(m.pop_mark()),
    "APPEND": _Machine.append, "APPENDS": _Machine.appends,
    "EMPTY_DICT": lambda m, a: m.push({}), "DICT": lambda m, a: m.push(_pairs_to_dict(m.pop_mark())),
    "SETITEM": _Machine.setitem, "SETITEMS": _Machine.setitems,
    "EMPTY_SET": lambda m, a: m.push(set()), "ADDITEMS": _Machine.additems,
    "FROZENSET": lambda m, a: m.push(_to_frozenset(m.pop_mark())),
    "PUT": _Machine.put, "BINPUT": _Machine.put, "LONG_BINPUT": _Machine.put, "MEMOIZE": _Machine.memoize,
    "GET": _Machine.get, "BINGET": _Machine.get, "LONG_BINGET": _Machine.get,
    "GLOBAL": _Machine.global_, "STACK_GLOBAL": _Machine.stack_global,
    "REDUCE": _Machine.reduce, "NEWOBJ": _Machine.newobj, "NEWOBJ_EX": _Machine.newobj_ex,
    "INST": _Machine.inst, "OBJ": _Machine.obj, "BUILD": _Machine.build,
    "PERSID": _Machine.persid, "BINPERSID": _Machine.binpersid,
}


def _to_frozenset(items: list) -> frozenset:
    try:
        return frozenset(items)
    except TypeError as exc:
        raise UnsafePickleError(f"unhashable set item: {exc}") from None


def _pairs(items: list) -> list[tuple]:
    if len(items) % 2:
        raise UnsafePickleError("an odd number of items for key/value pairs")
    return list(zip(items[::2], items[1::2]))


def _pairs_to_dict(items: list) -> dict:
    out: dict = {}
    _set_items(out, _pairs(items))
    return out


def _add_items(target, items: list) -> None:
    if not isinstance(target, set):
        raise UnsafePickleError(f"ADDITEMS on a {type(target).__name__}")
    try:
        target.update(items)
    except TypeError as exc:
        raise UnsafePickleError(f"unhashable set item: {exc}") from None


def loads(data: bytes, *, allowed: Mapping[str, Any] | None = None,
          persistent_load: Callable[[Any], Any] | None = None):
    """Interpret a pickle without importing or calling anything it names.

    Args:
        data: the pickle bytes (any protocol 0-5; out-of-band buffers are refused).
        allowed: dotted global name -> a function written by the caller that rebuilds plain
            data from the pickle's arguments (called through :class:`Rebuild`), or a
            non-callable constant that stands for the global; added to :data:`BASE_ALLOWED`.
        persistent_load: resolves persistent ids (the storages of a torch archive).

    Returns:
        The unpickled value; objects of classes outside the allow-list are :class:`Opaque`.

    Raises:
        UnsafePickleError: a malformed pickle or an unsupported opcode.

    Example:
        >>> import pickle
        >>> loads(pickle.dumps({"lr": 0.1, "sizes": (1, 2)}))
        {'lr': 0.1, 'sizes': (1, 2)}
    """
    return _Machine({**BASE_ALLOWED, **(allowed or {})}, persistent_load).run(data)


def as_mapping(value) -> dict | None:
    """A dict view of unpickled hyper-parameters: a dict, a dict subclass (``AttributeDict``)
    or an object whose state is a dict (``argparse.Namespace``); None otherwise."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, Opaque):
        if value.items:
            return dict(value.items)
        if isinstance(value.state, dict):
            return dict(value.state)
    return None


def describe(value, depth: int = 0):
    """Unpickled data as plain JSON-able values: opaque objects become ``"<name object, not loaded>"``,
    tensors ``"<tensor shape dtype>"`` (for provenance and messages). Keys become strings."""
    if depth > 20:
        return "<…>"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # a tensor
        return f"<tensor {tuple(value.shape)} {str(value.dtype).replace('torch.', '')}>"
    if isinstance(value, dict):
        return {str(k): describe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [describe(v, depth + 1) for v in value]
    return repr(value)
