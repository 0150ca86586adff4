"""CBOR encoding of payloads and snapshot states (cbor2).

Beyond what CBOR carries natively, a few private tags keep Python values exact:

=========  ===================================================================
tag        value
=========  ===================================================================
27         an object of a registered class: ``[name, fields]`` for a dataclass
           at version 1, ``[name, fields, version]`` for one at a later
           version, ``[name, value]`` for an Enum member (the IANA "serialised
           object" tag)
62001      a tuple (an array that decodes as a tuple)
62002      a frozenset (an array that decodes as a frozenset)
62003      a naive datetime, as its ISO 8601 text
62004      a time of day, naive or with a UTC offset, as its ISO 8601 text
62005      a Decimal NaN, infinity or -0, as its text (CBOR's tag 4 holds only
           finite decimals and no negative zero)
62006      the top-level payload of a registered dataclass at version 2 or
           later: ``[version, fields]``
62007      a snapshot state saved at a snapshot version: ``[version, state]``,
           decoded as :class:`~eventstore.records.VersionedState`
=========  ===================================================================

These tags are part of the stored format and never change meaning. The
top-level payload of a registered event at version 1 is a plain CBOR map of its
fields, so other languages can read it; a later version wraps that map in tag
62006, whose header (``d9 f2 36 82`` and the version) no field name can clash
with, and :func:`payload_version` reads from the first bytes alone. Version-1
bytes are those written before versions existed.

Loading a registered class runs its upcasters (see
:meth:`~eventstore.registry.EventRegistry.upcaster`) on the stored fields of an
older version before the class is built, for payloads and for objects nested in
any payload or snapshot state alike; the chains are resolved once per change of
the registry, and a class read at its own version costs no lookup for them.
Decoding never builds a class that is not registered: an object of an unknown
name decodes as its plain fields (tag 62006 too), and any other unknown tag as a
:class:`cbor2.CBORTag`.

Nesting is limited to :data:`MAX_DEPTH` levels, the most the decoder accepts;
:meth:`CborCodec.encode` refuses a deeper value, so nothing is ever stored that
cannot be read back.
"""

from __future__ import annotations

import dataclasses
import enum
import gc
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, time
from decimal import Decimal
from typing import Any

import cbor2

from eventstore.errors import DeserializationError, SerializationError
from eventstore.records import VersionedState
from eventstore.registry import EventRegistry, RegisteredClass, callable_name

TAG_OBJECT = 27
TAG_TUPLE = 62001
TAG_FROZENSET = 62002
TAG_NAIVE_DATETIME = 62003
TAG_TIME = 62004
TAG_SPECIAL_DECIMAL = 62005
TAG_VERSIONED_PAYLOAD = 62006
TAG_VERSIONED_STATE = 62007

_VERSIONED_PAYLOAD_HEAD = b"\xd9\xf2\x36\x82"
"""How a versioned payload starts: tag 62006 (two-byte form), then an array of two."""

_VERSIONED_STATE_HEAD = b"\xd9\xf2\x37\x82"
"""How a versioned snapshot state starts: tag 62007 (two-byte form), then an array of two."""

MAX_DEPTH = 400
"""The deepest nesting decode accepts (passed as cbor2's ``max_depth``); encode refuses more."""

_SURELY_DECODABLE_DEPTH = 100
"""Python nesting up to which the encoding is certainly within :data:`MAX_DEPTH`:
one Python level never takes more than three CBOR levels (a registered dataclass
is a tag, an array and a map), nor does any scalar."""

_LEAF_TYPES = frozenset({str, int, float, bool, type(None), bytes, bytearray})

_EncoderHook = Callable[[Any, Any], None]


def dataclass_fields(instance: Any) -> dict[str, Any]:
    """The init fields of a dataclass instance, shallow (not ``asdict``'s deep copy)."""
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance) if f.init}


def _encode_tuple(encoder: Any, value: tuple[Any, ...]) -> None:
    encoder.encode_semantic(TAG_TUPLE, list(value))


def _encode_frozenset(encoder: Any, value: frozenset[Any]) -> None:
    encoder.encode_semantic(TAG_FROZENSET, list(value))


def _encode_datetime(encoder: Any, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        encoder.encode_semantic(TAG_NAIVE_DATETIME, value.isoformat())
    else:
        encoder.encode_datetime(value)


def _encode_time(encoder: Any, value: time) -> None:
    encoder.encode_semantic(TAG_TIME, value.isoformat())


def _encode_versioned_state(encoder: Any, value: VersionedState) -> None:
    encoder.encode_semantic(TAG_VERSIONED_STATE, [value.version, value.state])


def _encode_decimal(encoder: Any, value: Decimal) -> None:
    sign, digits, exponent = value.as_tuple()
    if not value.is_finite() or (sign and not any(digits)):
        # NaN, infinities and -0 have no tag-4 form.
        encoder.encode_semantic(TAG_SPECIAL_DECIMAL, str(value))
        return
    mantissa = int("".join(map(str, digits)))
    # RFC 8949 tag 4, [exponent, mantissa] as a plain array (cbor2's own encoder
    # builds a tuple, which our tuple tag would wrap): readable by any CBOR library.
    encoder.encode_semantic(4, [exponent, -mantissa if sign else mantissa])


def _refuse(encoder: Any, value: Any) -> None:
    kind = type(value)
    hint = (
        "register it with an EventRegistry"
        if dataclasses.is_dataclass(kind) or isinstance(value, enum.Enum)
        else "convert it to a CBOR-encodable value (or a registered dataclass)"
    )
    raise cbor2.CBOREncodeError(f"cannot encode {kind.__module__}.{kind.__qualname__}: {hint}")


_BASE_ENCODERS: dict[type, _EncoderHook] = {
    tuple: _encode_tuple,
    frozenset: _encode_frozenset,
    datetime: _encode_datetime,
    time: _encode_time,
    Decimal: _encode_decimal,
    VersionedState: _encode_versioned_state,
}


def _decode_tuple(value: Any, immutable: bool) -> tuple[Any, ...]:
    return tuple(value)


def _decode_frozenset(value: Any, immutable: bool) -> frozenset[Any]:
    return frozenset(value)


def _decode_naive_datetime(value: Any, immutable: bool) -> datetime:
    return datetime.fromisoformat(value)


def _decode_time(value: Any, immutable: bool) -> time:
    return time.fromisoformat(value)


def _decode_special_decimal(value: Any, immutable: bool) -> Decimal:
    decoded = Decimal(value)
    if decoded.is_finite() and not (decoded.is_zero() and decoded.is_signed()):
        raise ValueError(f"tag {TAG_SPECIAL_DECIMAL} holds only NaN, infinities and -0")
    return decoded


def _decode_versioned_payload(value: Any, immutable: bool) -> Any:
    """Tag 62006 read without a class to load it: its fields, as plain data."""
    _versioned_content(value, TAG_VERSIONED_PAYLOAD, "fields")
    return value[1]


def _decode_versioned_state(value: Any, immutable: bool) -> VersionedState:
    _versioned_content(value, TAG_VERSIONED_STATE, "state")
    return VersionedState(value[0], value[1])


def _versioned_content(value: Any, tag: int, what: str) -> None:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not _is_version(value[0]):
        raise DeserializationError(f"a tag-{tag} value must be [version, {what}], version >= 1")


def _is_version(value: Any) -> bool:
    return type(value) is int and value >= 1


def payload_version(data: bytes | bytearray | memoryview) -> int:
    """The version a payload's bytes were stored at: 1 for a plain payload (every
    payload written before versions existed), else the version in its tag-62006
    header. Reads the first bytes only (at most 13); raises
    :class:`DeserializationError` for a tag-62006 header that holds no version."""
    header = _version_header(data)
    return 1 if header is None else header[0]


def state_version(data: bytes | bytearray | memoryview) -> int:
    """The snapshot version a snapshot state's bytes were saved at: 1 for a plain
    state (every state saved before snapshot versions existed), else the version
    of its tag-62007 ``[version, state]``. Reads the first bytes only; raises
    :class:`DeserializationError` for a tag-62007 header that holds no version."""
    header = _version_header(data, _VERSIONED_STATE_HEAD, f"tag-{TAG_VERSIONED_STATE} state")
    return 1 if header is None else header[0]


def _version_header(
    data: bytes | bytearray | memoryview,
    expected_head: bytes = _VERSIONED_PAYLOAD_HEAD,
    what: str = f"tag-{TAG_VERSIONED_PAYLOAD} payload",
) -> tuple[int, int] | None:
    """``(version, offset of what follows)`` of a versioned payload (or, with the
    state's head and tag, a versioned snapshot state); None for a plain one."""
    if data[:4] != expected_head:
        return None
    head = bytes(data[4:13])
    info = head[0] if head else 0xFF
    if info < 0x18:  # a small unsigned int, in the initial byte
        version, length = info, 1
    elif 0x18 <= info <= 0x1B:
        length = 1 + (1 << (info - 0x18))
        version = int.from_bytes(head[1:length], "big") if len(head) >= length else 0
    else:
        version, length = 0, 1
    if version < 1:
        content = "fields" if expected_head == _VERSIONED_PAYLOAD_HEAD else "state"
        raise DeserializationError(f"a {what} must be [version, {content}], version >= 1")
    return version, 4 + length


class CborCodec:
    """Encodes values to CBOR bytes and back, resolving registered classes.

    ``encode`` raises :class:`SerializationError`; ``decode`` raises
    :class:`DeserializationError` for any bytes it cannot decode, never another
    exception type. Instances are safe to share between threads.
    """

    def __init__(self, registry: EventRegistry | None = None) -> None:
        self.registry = registry if registry is not None else EventRegistry()
        self._generation = -1
        self._encoders: dict[type, _EncoderHook] = {}
        self._payload_heads: dict[type, bytes] = {}  # of classes at version > 1
        self._payload_heads_by_name: dict[str, bytes] = {}  # the same, by name and alias
        self._readers_generation = -1
        self._readers: dict[str, _ClassReader] = {}
        self._decoders: dict[int, Callable[[Any, bool], Any]] = {
            TAG_OBJECT: self._decode_object,
            TAG_TUPLE: _decode_tuple,
            TAG_FROZENSET: _decode_frozenset,
            TAG_NAIVE_DATETIME: _decode_naive_datetime,
            TAG_TIME: _decode_time,
            TAG_SPECIAL_DECIMAL: _decode_special_decimal,
            TAG_VERSIONED_PAYLOAD: _decode_versioned_payload,
            TAG_VERSIONED_STATE: _decode_versioned_state,
        }
        self._trial_decoders = {**self._decoders, TAG_OBJECT: _placeholder}

    # -- encoding ---------------------------------------------------------------

    def encode(self, value: Any) -> bytes:
        """CBOR bytes for ``value``; raises SerializationError naming what failed.

        A value nested more deeply than the decoder accepts (:data:`MAX_DEPTH`)
        is refused here, before anything is stored.
        """
        depth, plain = _nesting_depth(value)
        try:
            if plain:  # no hook could apply: cbor2's own encoding, about twice as fast
                data = cbor2.dumps(value)
            else:
                data = cbor2.dumps(value, encoders=self._current_encoders(), default=_refuse)
        except (cbor2.CBOREncodeError, UnicodeError, TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(str(exc) or type(exc).__name__) from exc
        if depth > _SURELY_DECODABLE_DEPTH:
            self._check_decodable(data)
        return data

    def _check_decodable(self, data: bytes) -> None:
        """Decode ``data`` as :meth:`decode` would, building no registered class;
        raise SerializationError if that fails."""
        try:
            cbor2.loads(data, semantic_decoders=self._trial_decoders, max_depth=MAX_DEPTH)
        except Exception as exc:
            raise SerializationError(
                f"the value is nested more deeply than the {MAX_DEPTH} levels a payload may "
                f"have ({exc}): flatten it"
            ) from exc

    def encode_plain_dict(self, value: dict[Any, Any]) -> bytes:
        """:meth:`encode` for a dict, faster when it is plain (dicts and lists of
        scalars, nested at most :data:`_SURELY_DECODABLE_DEPTH` deep): the hot
        path of every append. Same bytes, same errors."""
        if not _is_plain(value):
            return self.encode(value)
        return self.encode_known_plain(value)

    def encode_known_plain(self, value: dict[Any, Any] | list[Any]) -> bytes:
        """:meth:`encode` for a value :func:`all_plain` has accepted: cbor2's own
        encoding, with no hook and no walk. Same bytes, same errors."""
        try:
            return cbor2.dumps(value)
        except (cbor2.CBOREncodeError, UnicodeError, TypeError, ValueError) as exc:
            raise SerializationError(str(exc) or type(exc).__name__) from exc

    def encode_payload(self, value: Any) -> bytes:
        """Like :meth:`encode`, but a registered dataclass at the top is a plain map
        of its fields, wrapped in tag 62006 with its version when that is above 1."""
        if type(value) is dict:
            return self.encode(value)
        is_instance = dataclasses.is_dataclass(value) and not isinstance(value, type)
        if is_instance and self.registry.name_of(value) is not None:
            data = self.encode(dataclass_fields(value))
            self._current_encoders()
            head = self._payload_heads.get(type(value))
            return data if head is None else head + data
        return self.encode(value)

    def payload_heads(self) -> dict[str, bytes]:
        """The bytes that start the payload of each event type (name or alias) whose
        class is registered at a version above 1: tag 62006 and the version. A
        plain field map appended under such a type (``NewEvent(type, {...})``) is
        stored after them, as the class's own instances are, so it reads back at
        the class's current version. Empty when no class is versioned."""
        self._current_encoders()
        return self._payload_heads_by_name

    def _current_encoders(self) -> dict[type, _EncoderHook]:
        if self._generation != self.registry.generation:
            registry = self.registry
            generation = registry.generation
            encoders = dict(_BASE_ENCODERS)
            heads: dict[type, bytes] = {}
            heads_by_name: dict[str, bytes] = {}
            for cls, name in registry.classes().items():
                version = registry.version_of(cls)
                encoders[cls] = _object_encoder(name, issubclass(cls, enum.Enum), version)
                if version > 1:
                    heads[cls] = _VERSIONED_PAYLOAD_HEAD + cbor2.dumps(version)
                    heads_by_name.update(dict.fromkeys(registry.names_for(name), heads[cls]))
            self._encoders, self._payload_heads = encoders, heads
            self._payload_heads_by_name = heads_by_name
            self._generation = generation
        return self._encoders

    # -- decoding ---------------------------------------------------------------

    def decode(self, data: bytes | bytearray | memoryview) -> Any:
        """The value encoded in ``data``; raises DeserializationError for bad bytes
        (ValidationError when the registry's upcasters do not resolve: see
        :meth:`~eventstore.registry.EventRegistry.resolved`)."""
        self._current_readers()
        return self._loads(data)

    def _loads(self, data: bytes | bytearray | memoryview) -> Any:
        try:
            return cbor2.loads(data, semantic_decoders=self._decoders, max_depth=MAX_DEPTH)
        except DeserializationError:
            raise
        except Exception as exc:  # cbor2 raises many types for hostile input
            raise _decode_error(exc) from exc

    def decode_payload(self, event_type: str, data: bytes | bytearray | memoryview) -> Any:
        """Decode an event payload, rebuilding the registered class of ``event_type``
        (a name or an alias), upcast from the version the payload was stored at."""
        return self._decode_payload(self._current_readers().get(event_type), data)

    def _decode_payload(
        self, reader: _ClassReader | None, data: bytes | bytearray | memoryview
    ) -> Any:
        if data[:4] != _VERSIONED_PAYLOAD_HEAD:  # a plain map: version 1
            stored, value = 1, self._loads(data)
        else:
            stored, offset = _version_header(data) or (1, 0)
            value = self._loads(memoryview(data)[offset:])
        if reader is None or reader.is_enum:
            return value
        if not isinstance(value, Mapping):
            raise DeserializationError(
                f"a {reader.cls.__qualname__} payload must be a map of fields, "
                f"got {type(value).__name__}"
            )
        return reader.load(value, stored)

    def decode_event_data(
        self, stream_id: str, version: int, event_type: str, data: bytes | memoryview
    ) -> Any:
        """:meth:`decode_payload` for a stored event; the error names the event
        (message and attributes; the caller adds the position)."""
        readers = self._readers
        if self._readers_generation != self.registry.generation:
            readers = self._current_readers()
        reader = readers.get(event_type)
        if reader is None:
            # The common case, once per event read: an unregistered type decodes
            # to plain data. Any failure is decoded again below, for its message.
            try:
                return cbor2.loads(data, semantic_decoders=self._decoders, max_depth=MAX_DEPTH)
            except Exception:
                pass
        try:
            return self._decode_payload(reader, data)
        except DeserializationError as exc:
            raise DeserializationError(
                f"cannot decode event {version} of stream {stream_id!r} "
                f"(event type {event_type!r}): {exc}",
                stream_id=stream_id,
                version=version,
                event_type=event_type,
            ) from exc

    def decode_state(self, stream_id: str, version: int, data: bytes | memoryview) -> Any:
        """:meth:`decode` for a stored snapshot; the error names the snapshot."""
        try:
            return self.decode(data)
        except DeserializationError as exc:
            raise DeserializationError(
                f"cannot decode the snapshot of stream {stream_id!r} at version {version}: {exc}",
                stream_id=stream_id,
                version=version,
            ) from exc

    def _current_readers(self) -> dict[str, _ClassReader]:
        """The registered classes by name and alias, ready to load; rebuilt when the
        registry changed (raising ValidationError for an incomplete upcaster chain)."""
        registry = self.registry
        if self._readers_generation != registry.generation:
            generation = registry.generation
            readers: dict[str, _ClassReader] = {}
            for entry in dict.fromkeys(registry.resolved().values()):
                reader = _ClassReader(entry)
                for name in (entry.name, *entry.aliases):
                    readers[name] = reader
            self._readers, self._readers_generation = readers, generation
        return self._readers

    def _decode_object(self, value: Any, immutable: bool) -> Any:
        if (
            not isinstance(value, (list, tuple))
            or not 2 <= len(value) <= 3
            or not isinstance(value[0], str)
        ):
            raise DeserializationError(
                "a tag-27 object must be [name, fields] or [name, fields, version]"
            )
        name, content = value[0], value[1]
        stored = 1 if len(value) == 2 else value[2]
        if not _is_version(stored):
            raise DeserializationError(
                f"the version of a stored {name} object must be an int >= 1, not {stored!r}"
            )
        reader = self._readers.get(name)
        if reader is None:
            return dict(content) if isinstance(content, Mapping) else content
        if reader.is_enum:
            return reader.member(name, content)
        if not isinstance(content, Mapping):
            raise DeserializationError(f"the fields of a {name} object must be a map")
        return reader.load(content, stored)


class _ClassReader:
    """How one registered class is loaded from its stored fields (or value)."""

    __slots__ = ("chains", "cls", "is_enum", "name", "renamed_values", "version")

    def __init__(self, entry: RegisteredClass) -> None:
        self.cls = entry.cls
        self.name = entry.name
        self.version = entry.version
        self.chains = ((), *(entry.upcasters[k - 1 :] for k in range(1, entry.version)))
        """``chains[k]``: the upcasters that take fields stored at version k to today's."""
        self.renamed_values = entry.renamed_values
        self.is_enum = issubclass(entry.cls, enum.Enum)

    def load(self, fields: Mapping[Any, Any], stored: int) -> Any:
        """The instance for ``fields`` stored at version ``stored``."""
        if stored != self.version:
            fields = self.upcast(fields, stored)
        return _build(self.cls, fields)

    def upcast(self, fields: Mapping[Any, Any], stored: int) -> dict[Any, Any]:
        """``fields`` of version ``stored`` through the upcasters to the class's version.

        ``fields`` is the decoder's own (mutable) dict, or a copy of an immutable one,
        so the first upcaster may change it in place."""
        if stored > self.version:
            raise DeserializationError(
                f"it was stored by version {stored} of {self.name}, but "
                f"{self.cls.__qualname__} is registered at version {self.version}: read it "
                f"with code that registers version {stored} (or later)"
            )
        current: Any = fields if type(fields) is dict else dict(fields)
        from_version = stored
        for upcaster in self.chains[stored]:
            try:
                current = upcaster(current)
            except Exception as exc:
                raise DeserializationError(
                    f"the upcaster from version {from_version} of {self.name} "
                    f"({callable_name(upcaster)}) failed: {type(exc).__name__}: {exc}"
                ) from exc
            if type(current) is not dict:
                if not isinstance(current, Mapping):
                    raise DeserializationError(
                        f"the upcaster from version {from_version} of {self.name} "
                        f"({callable_name(upcaster)}) returned a {type(current).__name__}, "
                        "not a dict"
                    )
                current = dict(current)
            from_version += 1
        return current  # type: ignore[no-any-return]

    def member(self, name: str, value: Any) -> Any:
        """The Enum member stored as ``value`` (or mapped from it by ``renamed_values``)."""
        try:
            return self.cls(value)
        except ValueError as exc:
            try:
                return self.renamed_values[value]
            except (KeyError, TypeError):
                raise DeserializationError(
                    f"{value!r} is not a member of {name}: map it to a member with "
                    f"registry.register({self.cls.__qualname__}, renamed_values={{...}})"
                ) from exc


def _decode_error(exc: Exception) -> DeserializationError:
    """The error for bytes cbor2 could not decode. cbor2 reports a failure inside
    a tag decoder only as "error decoding semantic tag N", with the real error as
    its cause: that cause is what the reader needs (our own decoders raise
    DeserializationError with the reason), so it is passed on."""
    cause = exc.__cause__
    if isinstance(cause, DeserializationError):
        return DeserializationError(str(cause))
    if cause is not None and isinstance(exc, cbor2.CBORDecodeError):
        return DeserializationError(f"invalid CBOR: {exc} ({type(cause).__name__}: {cause})")
    return DeserializationError(f"invalid CBOR: {exc}")


def _placeholder(value: Any, immutable: bool) -> None:
    return None


def _nesting_depth(value: Any) -> tuple[int, bool]:
    """How many containers enclose the most deeply nested item of ``value``, and
    whether ``value`` is plain: only dicts and lists of :data:`_LEAF_TYPES`, which
    cbor2 encodes as we would without any encoder hook.

    Walks depth first without recursion and stops as soon as an item lies below
    :data:`MAX_DEPTH` containers (every container is at least one CBOR level), so
    a cyclic or absurdly deep value costs no more than a legal one: raises
    :class:`SerializationError` then. A container of scalars only is passed over
    with C-level iteration (``issuperset(map(type, ...))``): the common case.
    """
    if type(value) in _LEAF_TYPES:
        return 0, True
    only_leaves = _LEAF_TYPES.issuperset
    deepest = 0
    plain = True
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        kind = type(node)
        items: Any
        if kind is dict:
            items = node.values() if only_leaves(map(type, node)) else [*node, *node.values()]
        elif kind is list:
            items = node
        else:
            plain = False
            if kind is tuple or kind is set or kind is frozenset:
                items = node
            elif isinstance(node, Mapping):
                items = [*node.keys(), *node.values()]
            elif isinstance(node, (list, tuple, set, frozenset)):
                items = node
            elif isinstance(node, cbor2.CBORTag):
                items = (node.value,)
            elif dataclasses.is_dataclass(node) and not isinstance(node, type):
                items = dataclass_fields(node).values()
            elif isinstance(node, enum.Enum):
                items = (node.value,)
            else:
                continue  # a scalar to cbor2 or an encoder hook (datetime, Decimal, UUID, ...)
        if not items:
            continue
        if depth > deepest:
            if depth > MAX_DEPTH:
                raise SerializationError(
                    f"the value is nested more than {MAX_DEPTH} levels deep, "
                    "the most a payload may have: flatten it"
                )
            deepest = depth
        if not only_leaves(map(type, items)):
            depth += 1
            for item in items:
                if type(item) not in _LEAF_TYPES:
                    stack.append((item, depth))
    return deepest, plain


def _is_plain(value: dict[Any, Any] | list[Any]) -> bool:
    """:func:`all_plain` for one value."""
    return all_plain([value])


def all_plain(values: list[Any]) -> bool:
    """True when every item of ``values`` is a dict or list holding only dicts,
    lists and :data:`_LEAF_TYPES`, keys included, with no container deeper than
    :data:`_SURELY_DECODABLE_DEPTH`: cbor2 then encodes each exactly as
    :meth:`CborCodec.encode` would with every hook on, and the result surely
    decodes. False is always safe (the caller takes the general path).

    Walks all the values together, level by level: one :func:`gc.get_referents`
    call returns the children of every container of a level (a list's items; a
    dict's values, and its keys unless they are all exact ``str``, which dicts
    do not report), and the types of a whole level are checked in one C-level
    pass, so a batch of payloads costs a few C calls per level, not a Python
    call per container. Leaves have no children, so the walk ends at the first
    level without containers. A level wider than :data:`_WIDEST_LEVEL` also
    gives False: a value that holds the same container twice at every level (a
    cycle can) doubles at each, and the general walk, depth first, is the one
    that refuses it cheaply. Only CPython's collector reports children this way:
    elsewhere nothing counts as plain.
    """
    if _children is None or not _CONTAINER_TYPES.issuperset(map(type, values)):
        return False
    level = values
    for _ in range(_SURELY_DECODABLE_DEPTH + 1):
        level = _children(*level)
        if not level:
            return True
        if len(level) > _WIDEST_LEVEL or not _PLAIN_TYPES.issuperset(map(type, level)):
            return False
    return False


_CONTAINER_TYPES = frozenset({dict, list})

_PLAIN_TYPES = _LEAF_TYPES | {dict, list}

_WIDEST_LEVEL = 1 << 16
"""Items on one level past which :func:`all_plain` leaves values to the general walk."""

_children: Callable[..., list[Any]] | None = (
    gc.get_referents if sys.implementation.name == "cpython" else None
)


def _object_encoder(name: str, is_enum: bool, version: int) -> _EncoderHook:
    if is_enum:

        def encode_member(encoder: Any, member: Any) -> None:
            encoder.encode_semantic(TAG_OBJECT, [name, member.value])

        return encode_member

    if version > 1:

        def encode_versioned(encoder: Any, instance: Any) -> None:
            encoder.encode_semantic(TAG_OBJECT, [name, dataclass_fields(instance), version])

        return encode_versioned

    def encode_dataclass(encoder: Any, instance: Any) -> None:
        encoder.encode_semantic(TAG_OBJECT, [name, dataclass_fields(instance)])

    return encode_dataclass


def _build(cls: type, fields: Mapping[Any, Any]) -> Any:
    try:
        return cls(**fields)
    except TypeError as exc:
        raise DeserializationError(
            f"stored fields {sorted(map(str, fields))} do not fit {cls.__qualname__}: {exc}; "
            "if the class changed since, give new fields defaults, or register the class "
            "at a new version with an upcaster from the stored one (EventRegistry.upcaster)"
        ) from exc
