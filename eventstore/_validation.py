"""Argument checks shared by every store: refuse bad input before touching storage."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from eventstore.codec import CborCodec, all_plain
from eventstore.errors import SerializationError, ValidationError
from eventstore.records import ExpectedVersion, NewEvent, StreamState

MAX_IDENTIFIER_BYTES = 1024
"""Longest stream id or event type, in UTF-8 bytes: well inside PostgreSQL's
btree limit (about 2,700 bytes per index entry) for the primary key and the
event-type index."""

MAX_VERSION = 2**63 - 1
"""The largest BIGINT: the upper bound of a version range left open."""


MAX_TIMEOUT_SECONDS = 2_147_483
"""PostgreSQL's largest timeout (2^31 - 1 ms), in whole seconds."""


def check_seconds(value: object, what: str, *, zero_allowed: bool) -> float:
    """``value`` as a float if it is a finite number of seconds PostgreSQL can wait:
    at most :data:`MAX_TIMEOUT_SECONDS`, more than 0 (or 0 itself when
    ``zero_allowed``); ValidationError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"{what} must be a number of seconds, not {type(value).__name__}")
    lowest_ok = value >= 0 if zero_allowed else value > 0
    if not (math.isfinite(value) and lowest_ok and value <= MAX_TIMEOUT_SECONDS):
        lowest = "0" if zero_allowed else "more than 0"
        raise ValidationError(
            f"{what} must be {lowest} and at most {MAX_TIMEOUT_SECONDS} seconds, got {value}"
        )
    return float(value)


def check_identifier(value: object, what: str) -> str:
    """Return ``value`` if it is a usable stream id or event type, else raise."""
    if _is_plain_identifier(value):
        return value  # type: ignore[return-value]
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise ValidationError(f"{what} must not be empty")
    if "\x00" in value:
        raise ValidationError(f"{what} must not contain NUL characters (\\x00): {value!r}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"{what} is not valid Unicode text (lone surrogate at {exc.start}): {value!r}"
        ) from exc
    if size > MAX_IDENTIFIER_BYTES:
        raise ValidationError(
            f"{what} is {size} bytes in UTF-8; the limit is {MAX_IDENTIFIER_BYTES}: "
            "use a shorter id (a UUID or a hash of the natural key)"
        )
    return value


def _is_plain_identifier(value: object) -> bool:
    """The common case, decided without encoding: non-empty ASCII (one byte per
    character, so its length is its size in UTF-8) without NUL."""
    return (
        type(value) is str
        and 0 < len(value) <= MAX_IDENTIFIER_BYTES
        and value.isascii()
        and "\x00" not in value
    )


def check_int(value: object, what: str, *, minimum: int) -> int:
    """Return ``value`` if it is an int (not a bool) >= ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{what} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValidationError(f"{what} must be >= {minimum}, got {value}")
    if value > MAX_VERSION:
        raise ValidationError(f"{what} must fit in a BIGINT, got {value}")
    return value


def expected_bounds(expected: ExpectedVersion) -> tuple[int, int]:
    """The inclusive range the stream's current version must lie in for an append."""
    if isinstance(expected, StreamState):
        if expected is StreamState.ANY:
            return 0, MAX_VERSION
        if expected is StreamState.NO_STREAM:
            return 0, 0
        return 1, MAX_VERSION
    if isinstance(expected, bool) or not isinstance(expected, int):
        raise ValidationError(
            "expected_version must be an int >= 0 or one of eventstore.ANY, "
            f"eventstore.NO_STREAM, eventstore.STREAM_EXISTS; got {expected!r}"
        )
    exact = check_int(expected, "expected_version", minimum=0)
    return exact, exact


def check_range(from_version: object, to_version: object) -> tuple[int, int]:
    """The inclusive version range of a load, with an open end as MAX_VERSION."""
    low = check_int(from_version, "from_version", minimum=1)
    if to_version is None:
        return low, MAX_VERSION
    high = check_int(to_version, "to_version", minimum=1)
    if low > high:
        raise ValidationError(f"from_version ({low}) is greater than to_version ({high})")
    return low, high


def check_limit(limit: object) -> int | None:
    """``limit`` if it is None or an int >= 1."""
    if limit is None:
        return None
    return check_int(limit, "limit", minimum=1)


def metadata_json(metadata: object, event_type: str) -> str | None:
    """The JSON text to store for ``metadata`` (None stays None), or raise.

    PostgreSQL's JSONB refuses NUL characters, NaN and Infinity; JSON object keys
    must be str (``json.dumps`` would silently turn other keys into text); an
    int must have a decimal form Python will write (at most
    ``sys.get_int_max_str_digits()`` digits, 4,300 by default).

    The text reads back as the same values from either store: JSONB keeps a
    number as the decimal it was written as, and reads ``1e+16`` back as an int,
    so a float that Python writes with a positive exponent is written out in
    full (``10000000000000000.0``) and stays a float; -0.0 is written as 0.0,
    since JSONB numbers have no negative zero.
    """
    if metadata is None:
        return None
    if type(metadata) is dict and _is_flat(metadata):
        # The common case, checked on the encoded text: json refuses NaN and
        # Infinity; an ASCII text holds no lone surrogate, and a NUL character
        # would show as the escape \\u0000. Anything else takes the full check.
        try:
            text = _encode_flat(metadata)
        except ValueError:
            pass
        else:
            if text.isascii() and "\\u0000" not in text:
                return _exact_json(metadata) if _may_hold_changed_float(text) else text
    if not isinstance(metadata, Mapping):
        raise ValidationError(
            f"metadata of {event_type!r} must be a mapping (a JSON object), "
            f"not {type(metadata).__name__}"
        )
    _check_json(metadata, f"metadata of {event_type!r}")
    text = _JSON.encode(metadata)
    return _exact_json(metadata) if _may_hold_changed_float(text) else text


def check_stored_event(
    stream_id: object, version: object, event_type: object, metadata_text: str | None
) -> None:
    """Refuse an event from outside the library (an import file) that
    :meth:`append_events` could not have stored: the same checks of its stream
    id, event type and metadata (given as JSON text; JSON ``null`` counts as
    none), and a version in ``1..2**63-1``."""
    check_identifier(stream_id, "stream_id")
    check_int(version, "version", minimum=1)
    event_type = check_identifier(event_type, "event_type")
    if metadata_text is None or _plain_metadata_accepted(metadata_text):
        return
    try:
        metadata = json.loads(metadata_text, parse_int=_parse_json_int)
    except ValueError as exc:
        raise ValidationError(f"{event_type!r} has metadata that is not JSON ({exc})") from None
    metadata_json(metadata, event_type)


def _plain_metadata_accepted(text: str) -> bool:
    """True when ``text`` is metadata :func:`check_stored_event` accepts, decided by a
    bare parse; False means "take the full check" (which may accept it too).

    The bare parse decides only texts where it gives the full check's answer: no
    backslash (so no escaped NUL or lone surrogate), no lone surrogate, no more
    brackets than :data:`MAX_METADATA_DEPTH` (so no deeper nesting), no leading
    or trailing whitespace; an int too long for Python fails the parse. Such a
    text is accepted when it parses (NaN and Infinity refused) as ``null`` or as
    an object, either flat without floats or with no exponent and no run of 300
    digits anywhere (so every float is finite).
    """
    if "\\" in text:
        return False
    if len(text) > MAX_METADATA_DEPTH and text.count("{") + text.count("[") > MAX_METADATA_DEPTH:
        return False
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return False
    try:
        value, end = _SCAN_JSON(text, 0)
    except (ValueError, StopIteration):
        return False
    if end != len(text):
        return False
    if value is None:
        return True
    if type(value) is not dict:
        return False
    return _NO_FLOAT.issuperset(map(type, value.values())) or _MAY_OVERFLOW(text) is None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


_NO_FLOAT = frozenset({str, int, bool, type(None)})
"""The value types of a flat object that holds no float."""
_MAY_OVERFLOW = re.compile(r"[0-9](?:[eE]|[0-9]{299})").search
"""Finds an exponent or a run of 300 digits: where a float may have overflowed."""
_JSON_DECODER: Any = json.JSONDecoder(parse_constant=_refuse_constant)
_SCAN_JSON: Any = _JSON_DECODER.scan_once
"""json's scanner (C when available): one JSON value at an index, no whitespace skipped."""


def _may_hold_changed_float(text: str) -> bool:
    """Whether JSON ``text`` from json's encoder may hold a float JSONB would not
    give back as written: one with a positive exponent (JSONB reads ``1e+16``
    back as the int 10000000000000000) or -0.0 (back as 0.0). A str holding
    these characters gives a needless, harmless, slower encoding."""
    return "e+" in text or "-0.0" in text


def _exact_json(metadata: Mapping[str, Any]) -> str:
    """JSON text for checked ``metadata`` whose every float JSONB gives back as
    the same float (see :func:`metadata_json`); the rest as ``_JSON`` writes it."""
    parts: list[str] = []
    _write_json(metadata, parts.append)
    return "".join(parts)


def _write_json(value: object, write: Callable[[str], object]) -> None:
    if isinstance(value, float):
        write(_float_text(value))
    elif isinstance(value, (dict, Mapping)):
        write("{")
        for index, (key, item) in enumerate(value.items()):
            write(f"{',' if index else ''}{_JSON.encode(key)}:")
            _write_json(item, write)
        write("}")
    elif isinstance(value, (list, tuple)):
        write("[")
        for index, item in enumerate(value):
            if index:
                write(",")
            _write_json(item, write)
        write("]")
    else:
        write(_JSON.encode(value))


def _float_text(value: float) -> str:
    """A finite float as a JSON number JSONB reads back as this float."""
    if value == 0:
        return "0.0"  # -0.0 too: JSONB numbers have no negative zero
    text = float.__repr__(value)
    if "e+" not in text:
        return text
    return f"{Decimal(text):f}.0"


def _parse_json_int(text: str) -> object:
    """An int of JSON text, or :data:`_UNWRITABLE_INT` when Python refuses to
    convert that many digits (which :func:`_check_json` then refuses)."""
    try:
        return int(text)
    except ValueError:
        return _UNWRITABLE_INT


_UNWRITABLE_INT = object()
"""What :func:`_parse_json_int` gives for an int with too many digits."""

_SURELY_WRITABLE_BITS = 2000
"""Ints of at most this many bits have fewer than 640 decimal digits, the lowest
limit ``sys.set_int_max_str_digits`` accepts: Python always writes them."""


class _UnwritableIntError(ValidationError):
    """An int with more digits than Python converts to text; the enclosing
    object's loop names its key."""


def _is_writable_int(value: int) -> bool:
    if value.bit_length() <= _SURELY_WRITABLE_BITS:
        return True
    try:
        int.__repr__(value)
    except ValueError:
        return False
    return True


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})


def _encode_flat(metadata: dict[str, Any]) -> str:
    """``_JSON.encode(metadata)`` for a flat dict, faster."""
    if _C_ENCODER is None:
        return _JSON.encode(metadata)
    return "".join(_C_ENCODER(metadata, 0))


def _is_flat(metadata: dict[Any, Any]) -> bool:
    """True for a dict of str keys and JSON scalar values (no nesting)."""
    return _STR_ONLY.issuperset(map(type, metadata)) and _JSON_SCALARS.issuperset(
        map(type, metadata.values())
    )


_STR_ONLY = frozenset({str})


def _mapping_to_dict(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_JSON = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_mapping_to_dict
)

# json's C encoder built once, with _JSON's settings (compact, non-ASCII kept, NaN
# refused): JSONEncoder.encode builds one per call, which costs more than the
# encoding of a small object. No cycle check: only flat dicts get here.
_MAKE_C_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODER: Any = (
    None
    if _MAKE_C_ENCODER is None
    else _MAKE_C_ENCODER(
        None, _mapping_to_dict, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )
)


MAX_METADATA_DEPTH = 100
"""How deeply metadata may nest (objects and arrays); deeper is refused."""


def _check_json(value: object, where: str, depth: int = 0) -> None:
    # Concrete types first: ABC isinstance checks are slow on this hot path.
    if isinstance(value, str):
        _check_text(value, where)
    elif value is None:
        return
    elif isinstance(value, int):
        if not _is_writable_int(value):
            raise _UnwritableIntError(where)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{where} holds {value!r}; JSON has no NaN or Infinity")
    elif depth >= MAX_METADATA_DEPTH:
        raise ValidationError(f"{where} nests deeper than {MAX_METADATA_DEPTH} levels: flatten it")
    elif isinstance(value, (dict, Mapping)):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(
                    f"{where} has a key of type {type(key).__name__} ({key!r}); "
                    "JSON object keys must be str"
                )
            _check_text(key, where)
            try:
                _check_json(item, where, depth + 1)
            except _UnwritableIntError:
                raise ValidationError(
                    f"{where}: {key!r} holds an int of more than "
                    f"{sys.get_int_max_str_digits()} digits, more than Python writes as "
                    "text (sys.get_int_max_str_digits()): store it as a str"
                ) from None
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_json(item, where, depth + 1)
    elif value is _UNWRITABLE_INT:
        raise _UnwritableIntError(where)
    else:
        raise ValidationError(
            f"{where} holds a {type(value).__name__}, which JSON cannot hold; "
            "use str, int, float, bool, None, lists and dicts"
        )


def check_text(value: str, where: str) -> None:
    """Refuse text PostgreSQL cannot store: NUL characters and lone surrogates."""
    _check_text(value, where)


def _check_text(value: str, where: str) -> None:
    if value.isascii() and "\x00" not in value:
        return
    if "\x00" in value:
        raise ValidationError(f"{where} contains a NUL character (\\x00), which JSONB refuses")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{where} contains a lone surrogate: {value!r}") from exc


class EncodedEvent(NamedTuple):
    """One event of a batch, checked and encoded, ready to store."""

    event_type: str
    data: bytes
    metadata: str | None


@dataclasses.dataclass(slots=True)
class EncodedBatch:
    """A checked and encoded batch, by column (what a multi-row insert takes):
    ``event_types[i]``, ``data[i]`` and ``metadata[i]`` describe event ``i``."""

    event_types: list[str]
    data: list[bytes]
    metadata: list[str | None]

    def __len__(self) -> int:
        return len(self.event_types)

    def __iter__(self) -> Iterator[EncodedEvent]:
        for row in zip(self.event_types, self.data, self.metadata, strict=True):
            yield EncodedEvent(*row)


def encode_batch(events: object, codec: CborCodec) -> EncodedBatch:
    """Check and encode every event of a batch; raise before anything is stored.

    Items are :class:`NewEvent` or instances of classes registered in the
    codec's registry. A NewEvent's dict payload under the name (or an alias) of
    a class registered at a version above 1 is stored with that version, as the
    class's instances are: it holds the current version's fields. This runs
    once per appended event, so the common case (a NewEvent with a plain dict
    payload and flat metadata) is written out inline; everything else goes
    through the general checks.
    """
    if type(events) is not list and (
        isinstance(events, (NewEvent, str, bytes, Mapping)) or not isinstance(events, Iterable)
    ):
        raise ValidationError(
            f"events must be a list of events, not {type(events).__name__}: "
            "wrap a single event in a list"
        )
    items: list[Any] = events if type(events) is list else list(events)
    # One walk over every payload of the batch at once (a few C calls per level)
    # when all are NewEvents with dict payloads: the common batch.
    dicts = [item.data for item in items if type(item) is NewEvent and type(item.data) is dict]
    all_dicts_plain = len(dicts) == len(items) and all_plain(dicts)
    event_types: list[str] = []
    payloads: list[bytes] = []
    metadata_texts: list[str | None] = []
    encode_plain = codec.encode_known_plain if all_dicts_plain else codec.encode_plain_dict
    checked_type: object = _NO_TYPE_CHECKED_YET  # the last event type that passed; str is immutable
    versioned_heads = codec.payload_heads()  # usually empty: then no lookup per event
    for position, item in enumerate(items):
        if type(item) is NewEvent:
            event_type, data, metadata = item.event_type, item.data, item.metadata
            if event_type is not checked_type:
                if not _is_plain_identifier(event_type):
                    check_identifier(event_type, f"event_type of event {position}")
                checked_type = event_type
        else:
            event_type, data, metadata = _unpack(item, position, codec)
        try:
            if type(data) is dict:
                payload = encode_plain(data)
                if versioned_heads and event_type in versioned_heads:
                    payload = versioned_heads[event_type] + payload
            else:
                payload = codec.encode_payload(data)
        except SerializationError as exc:
            raise SerializationError(
                f"cannot encode the payload of event {position} ({event_type!r}): {exc}"
            ) from exc
        event_types.append(event_type)
        payloads.append(payload)
        metadata_texts.append(None if metadata is None else metadata_json(metadata, event_type))
    if not event_types:
        raise ValidationError("events is empty: append at least one event")
    return EncodedBatch(event_types, payloads, metadata_texts)


_NO_TYPE_CHECKED_YET = object()
"""Where :func:`encode_batch` starts its "last event type that passed" memo: an
object no event type can be, so that the first event's type (None included) is
always checked."""


def _unpack(item: object, position: int, codec: CborCodec) -> tuple[str, Any, Any]:
    """``(event_type, data, metadata)`` of a NewEvent subclass or a registered dataclass."""
    if isinstance(item, NewEvent):
        check_identifier(item.event_type, f"event_type of event {position}")
        return item.event_type, item.data, item.metadata
    name = codec.registry.name_of(item)
    if name is None or not dataclasses.is_dataclass(item):
        raise ValidationError(
            f"event {position} is a {type(item).__qualname__}: pass an eventstore.NewEvent "
            "or an instance of a dataclass registered with the store's EventRegistry"
        )
    return name, item, None
