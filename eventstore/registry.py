"""The event registry: which Python classes may be stored, under which names and
versions, and how the stored fields of older versions become today's (upcasters)."""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import textwrap
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast, overload

from eventstore.errors import ValidationError

_T = TypeVar("_T", bound=type)

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Takes the stored fields of version N of a class and returns those of version N+1."""
_U = TypeVar("_U", bound=Upcaster)


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class RegisteredClass:
    """Everything the codec needs to load one registered class, resolved.

    ``upcasters[n - 1]`` takes the fields of version ``n`` to version ``n + 1``,
    for every ``n`` from 1 to ``version - 1``. ``renamed_values`` maps stored
    values of an Enum that are no longer any member's to the member they load as.
    """

    cls: type
    name: str
    version: int
    aliases: tuple[str, ...]
    upcasters: tuple[Upcaster, ...]
    renamed_values: Mapping[Any, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class _Spec:
    """What a class was registered with."""

    name: str
    version: int
    aliases: tuple[str, ...]
    renamed_values: Mapping[Any, Any]


class EventRegistry:
    """Maps type names to dataclasses and Enum classes, and back.

    Appending an instance of a registered dataclass takes its ``event_type``
    from here; loading an event of a registered type (or of one of its
    aliases, the names it had before) rebuilds the instance, running the
    class's upcasters first on fields stored by an older version. Nested
    registered dataclasses and members of registered enums round-trip inside
    any payload or snapshot state. Decoding never builds a class that is not
    registered here.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, type] = {}  # names and aliases
        self._specs: dict[type, _Spec] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._lock = threading.Lock()
        self._resolved: tuple[int, dict[str, RegisteredClass]] | None = None
        self.generation = 0
        """Incremented on every registration (of a class or an upcaster), so
        codecs can refresh their caches."""

    # -- registering ----------------------------------------------------------------

    @overload
    def register(
        self,
        cls: _T,
        *,
        name: str | None = None,
        version: int = 1,
        aliases: Iterable[str] = (),
        renamed_values: Mapping[Any, Any] | None = None,
    ) -> _T: ...

    @overload
    def register(
        self,
        cls: None = None,
        *,
        name: str | None = None,
        version: int = 1,
        aliases: Iterable[str] = (),
        renamed_values: Mapping[Any, Any] | None = None,
    ) -> Callable[[_T], _T]: ...

    def register(
        self,
        cls: _T | None = None,
        *,
        name: str | None = None,
        version: int = 1,
        aliases: Iterable[str] = (),
        renamed_values: Mapping[Any, Any] | None = None,
    ) -> _T | Callable[[_T], _T]:
        """Register a dataclass or an Enum class under ``name`` (default: its ``__name__``).

        Works as ``registry.register(Cls)``, ``@registry.register`` and
        ``@registry.register(name="OrderPlaced", version=2)``; returns the class.

        ``version`` (an int >= 1) is the version of the class's fields: a
        payload of a class at version 2 or more carries it in its stored bytes,
        and a class at version V needs an upcaster from every version 1..V-1
        (see :meth:`upcaster`). ``aliases`` are names the class was registered
        under before: events stored under an alias load as this class, and a
        filter by event type that names the class matches them. An Enum class
        has no versions; ``renamed_values`` maps stored values that are no
        longer any member's (a member removed or whose value changed) to the
        member they load as.

        Registering the same class again with the same arguments is harmless.
        Raises :class:`ValidationError` for a class that is neither a dataclass
        nor an Enum, for a name or alias already taken by another class (naming
        both), for an int Enum whose values ``enum.auto()`` generated (removing a
        member would renumber the others), and for any other bad argument.
        """
        if cls is None:
            return lambda inner: self.register(
                inner, name=name, version=version, aliases=aliases, renamed_values=renamed_values
            )
        if not isinstance(cls, type) or not (
            dataclasses.is_dataclass(cls) or issubclass(cls, enum.Enum)
        ):
            raise ValidationError(
                f"only dataclasses and Enum classes can be registered, not {cls!r}"
            )
        spec = _Spec(
            _checked_name(cls.__name__ if name is None else name, "a registered name"),
            _checked_version(version, "version"),
            _checked_aliases(aliases),
            _checked_renamed_values(cls, renamed_values),
        )
        if spec.name in spec.aliases:
            raise ValidationError(f"{cls.__qualname__}'s name {spec.name!r} is also in its aliases")
        if issubclass(cls, enum.Enum):
            if spec.version != 1:
                raise ValidationError(
                    f"{cls.__qualname__} is an Enum, which has no versions: register it "
                    "without version=, and map stored values that changed with renamed_values="
                )
            _refuse_generated_int_values(cast("type[enum.Enum]", cls))
        self._add(cls, spec)
        return cls

    def _add(self, cls: type, spec: _Spec) -> None:
        with self._lock:
            known = self._specs.get(cls)
            if known is not None:
                if known == spec:
                    return
                if known.name != spec.name:
                    raise ValidationError(
                        f"{cls.__qualname__} is already registered as {known.name!r}; "
                        f"to load events stored as {spec.name!r} too, register it once "
                        f"with aliases=({spec.name!r},)"
                    )
                raise ValidationError(
                    f"{cls.__qualname__} is already registered as {known.name!r} with "
                    f"version={known.version}, aliases={known.aliases!r}: register each "
                    "class once, with all of them"
                )
            for taken in (spec.name, *spec.aliases):
                other = self._by_name.get(taken)
                if other is not None:
                    what = "the name" if taken == self._specs[other].name else "an alias"
                    role = "name" if taken == spec.name else "alias"
                    raise ValidationError(
                        f"the {role} {taken!r} of {cls.__qualname__} is already {what} of "
                        f"{other.__qualname__}: register {cls.__qualname__} under another "
                        f"{role}, or make {taken!r} an alias of one class only"
                    )
            for taken in (spec.name, *spec.aliases):
                self._by_name[taken] = cls
            self._specs[cls] = spec
            self.generation += 1

    def upcaster(self, name: str, *, from_version: int) -> Callable[[_U], _U]:
        """Decorate ``fn(fields: dict) -> dict``, which takes the stored fields of
        version ``from_version`` of the class registered as ``name`` (or under
        it as an alias) and returns those of the next version.

        Upcasters run on the raw fields, before the class is built, wherever a
        payload or snapshot state is decoded; nested registered objects in the
        fields are already built. Returns ``fn`` unchanged. A class at version V
        needs one from every version 1..V-1: a missing one (or one past the
        class's version, or for a name nothing is registered under) is refused
        with :class:`ValidationError` the first time the registry is used to
        decode after the change. Raises ValidationError at once for a bad
        argument, or for a second upcaster of the same name and version.
        """
        key = (
            _checked_name(name, "an upcaster's name"),
            _checked_version(from_version, "from_version"),
        )

        def add(fn: _U) -> _U:
            if not callable(fn):
                raise ValidationError(f"an upcaster must be callable, not {type(fn).__name__}")
            with self._lock:
                known = self._upcasters.get(key)
                if known is not None and known is not fn:
                    raise ValidationError(
                        f"{name!r} already has an upcaster from version {from_version} "
                        f"({callable_name(known)}); register one per version"
                    )
                self._upcasters[key] = fn
                self.generation += 1
            return fn

        return add

    # -- questions ------------------------------------------------------------------

    def name_of(self, cls_or_instance: Any) -> str | None:
        """The registered name of a class or of an instance's class, or None."""
        cls = cls_or_instance if isinstance(cls_or_instance, type) else type(cls_or_instance)
        spec = self._specs.get(cls)
        return None if spec is None else spec.name

    def class_for(self, name: str) -> type | None:
        """The class registered under ``name`` or with ``name`` as an alias, or None."""
        return self._by_name.get(name)

    def canonical_name(self, name: str) -> str | None:
        """The registered name of the class known as ``name`` (its name or an alias), or None."""
        cls = self._by_name.get(name)
        return None if cls is None else self._specs[cls].name

    def names_for(self, name: str) -> tuple[str, ...]:
        """The name and every alias of the class known as ``name``; ``(name,)`` when
        no class is. Every filter by event type matches all of them."""
        cls = self._by_name.get(name)
        if cls is None:
            return (name,)
        spec = self._specs[cls]
        return (spec.name, *spec.aliases)

    def expand_names(self, names: list[str] | None) -> list[str] | None:
        """``names`` with every alias of each (see :meth:`names_for`), each once, in
        order; None stays None (no filter)."""
        if names is None:
            return None
        return list(dict.fromkeys(alias for name in names for alias in self.names_for(name)))

    def version_of(self, cls_or_name: Any) -> int:
        """The registered version of a class (or an instance's class) or of the class
        known by a name or alias; 1 for anything not registered (unversioned data)."""
        if isinstance(cls_or_name, str):
            found = self._by_name.get(cls_or_name)
        else:
            found = cls_or_name if isinstance(cls_or_name, type) else type(cls_or_name)
        spec = self._specs.get(found) if found is not None else None
        return 1 if spec is None else spec.version

    def classes(self) -> dict[type, str]:
        """A copy of the registered classes and their names."""
        with self._lock:
            return {cls: spec.name for cls, spec in self._specs.items()}

    def resolved(self) -> dict[str, RegisteredClass]:
        """Every registered class by its name and by each alias, with its upcaster
        chain; worked out once per :attr:`generation`.

        Raises :class:`ValidationError` when a class at version V lacks an
        upcaster from a version below V (naming the class and the missing
        ``from_version``), when an upcaster goes past its class's version, or
        when one names no registered class.
        """
        with self._lock:
            cached = self._resolved
            if cached is not None and cached[0] == self.generation:
                return cached[1]
            table = self._resolve()
            self._resolved = (self.generation, table)
            return table

    def _resolve(self) -> dict[str, RegisteredClass]:
        chains: dict[type, dict[int, Upcaster]] = {cls: {} for cls in self._specs}
        for (name, from_version), fn in self._upcasters.items():
            cls = self._by_name.get(name)
            if cls is None:
                raise ValidationError(
                    f"an upcaster from version {from_version} of {name!r} ({callable_name(fn)}) "
                    f"names no registered class: register the class (or an alias {name!r})"
                )
            spec = self._specs[cls]
            if from_version >= spec.version:
                raise ValidationError(
                    f"the upcaster from version {from_version} of {spec.name!r} "
                    f"({callable_name(fn)}) leads to version {from_version + 1}, but "
                    f"{cls.__qualname__} is registered at version {spec.version}: "
                    f"register it with version={from_version + 1}"
                )
            if from_version in chains[cls]:
                raise ValidationError(
                    f"{cls.__qualname__} has two upcasters from version {from_version}, "
                    f"one under {name!r}: register one per version"
                )
            chains[cls][from_version] = fn
        table: dict[str, RegisteredClass] = {}
        for cls, spec in self._specs.items():
            chain = chains[cls]
            for from_version in range(1, spec.version):
                if from_version not in chain:
                    raise ValidationError(
                        f"{cls.__qualname__} (registered as {spec.name!r}) is at version "
                        f"{spec.version} but has no upcaster from version {from_version}: "
                        f"add @registry.upcaster({spec.name!r}, from_version={from_version})"
                    )
            entry = RegisteredClass(
                cls,
                spec.name,
                spec.version,
                spec.aliases,
                tuple(chain[n] for n in range(1, spec.version)),
                spec.renamed_values,
            )
            for name in (spec.name, *spec.aliases):
                table[name] = entry
        return table

    def __contains__(self, item: object) -> bool:
        return self.name_of(item) is not None

    def __len__(self) -> int:
        return len(self._specs)


def _checked_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValidationError(f"{what} must be a non-empty str, not {name!r}")
    return name


def _checked_version(version: object, what: str) -> int:
    if type(version) is not int or version < 1:
        raise ValidationError(f"{what} must be an int >= 1, not {version!r}")
    return version


def _checked_aliases(aliases: object) -> tuple[str, ...]:
    if isinstance(aliases, str) or not isinstance(aliases, Iterable):
        raise ValidationError(
            f"aliases must be a collection of str, not {type(aliases).__name__}: "
            "write aliases=('OldName',)"
        )
    names = tuple(_checked_name(alias, "an alias") for alias in aliases)
    if len(set(names)) != len(names):
        raise ValidationError(f"aliases holds a name twice: {names!r}")
    return names


def _checked_renamed_values(cls: type, renamed_values: object) -> Mapping[Any, Any]:
    if renamed_values is None:
        return {}
    if not issubclass(cls, enum.Enum):
        raise ValidationError(
            f"renamed_values is for Enum classes; {cls.__qualname__} is a dataclass: "
            "rename its fields with an upcaster"
        )
    if not isinstance(renamed_values, Mapping):
        raise ValidationError(
            f"renamed_values must be a mapping of stored values to members of "
            f"{cls.__qualname__}, not {type(renamed_values).__name__}"
        )
    current = {member.value for member in cls}
    for stored, member in renamed_values.items():
        if not isinstance(member, cls):
            raise ValidationError(
                f"renamed_values maps {stored!r} to {member!r}, which is not a member of "
                f"{cls.__qualname__}"
            )
        if stored in current:
            raise ValidationError(
                f"renamed_values maps {stored!r}, but that is the value of "
                f"{cls(stored)}: list only values no member has any longer"
            )
    return dict(renamed_values)


def _refuse_generated_int_values(cls: type[enum.Enum]) -> None:
    """Refuse an Enum with int members whose values ``enum.auto()`` generated:
    they are numbered in order, so removing a member renumbers those after it and
    stored values would load as other members. Known from the class's source
    (auto() leaves no trace on the class); a class without source is let through."""
    generated = [
        member
        for member_name in _auto_assigned(cls)
        if (member := cls.__members__.get(member_name)) is not None
        and isinstance(member.value, int)
        and not isinstance(member.value, bool)
    ]
    if generated:
        explicit = ", ".join(f"{m.name} = {m.value!r}" for m in cls)
        raise ValidationError(
            f"{cls.__qualname__} takes int values from enum.auto() "
            f"({', '.join(m.name for m in generated)}): they are stored, and removing or "
            f"reordering a member would renumber the others, so stored values would load "
            f"as the wrong members. Give every member an explicit value (today's are "
            f"{explicit}) and register it again"
        )


def _auto_assigned(cls: type) -> list[str]:
    """The names the class body assigns an ``auto()`` (or ``enum.auto()``) call to."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return []
    body = next((node for node in tree.body if isinstance(node, ast.ClassDef)), None)
    if body is None:
        return []
    names: list[str] = []
    for statement in body.body:
        value: ast.expr | None
        if isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        elif isinstance(statement, ast.AnnAssign):
            targets, value = [statement.target], statement.value
        else:
            continue
        if isinstance(value, ast.Call) and _is_auto(value.func):
            names.extend(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _is_auto(func: ast.expr) -> bool:
    return (isinstance(func, ast.Name) and func.id == "auto") or (
        isinstance(func, ast.Attribute) and func.attr == "auto"
    )


def callable_name(fn: object) -> str:
    """How an error names a function: its qualified name, else its repr."""
    return str(getattr(fn, "__qualname__", None) or repr(fn))
