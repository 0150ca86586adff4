"""The event registry: which Python classes may be stored, and under which names."""

from __future__ import annotations

import dataclasses
import enum
import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

from eventstore.errors import ValidationError

_T = TypeVar("_T", bound=type)


class EventRegistry:
    """Maps type names to dataclasses and Enum classes, and back.

    Appending an instance of a registered dataclass takes its ``event_type``
    from here; loading an event of a registered type rebuilds the instance.
    Nested registered dataclasses and members of registered enums round-trip
    inside any payload or snapshot state. Decoding never builds a class that is
    not registered here.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, type] = {}
        self._by_class: dict[type, str] = {}
        self._lock = threading.Lock()
        self.generation = 0
        """Incremented on every registration, so codecs can refresh their caches."""

    @overload
    def register(self, cls: _T, *, name: str | None = None) -> _T: ...

    @overload
    def register(self, cls: None = None, *, name: str | None = None) -> Callable[[_T], _T]: ...

    def register(
        self, cls: _T | None = None, *, name: str | None = None
    ) -> _T | Callable[[_T], _T]:
        """Register a dataclass or an Enum class under ``name`` (default: its ``__name__``).

        Works as ``registry.register(Cls)``, ``@registry.register`` and
        ``@registry.register(name="OrderPlaced")``; returns the class. Registering
        the same class under the same name again is harmless. Raises
        :class:`ValidationError` for a class that is neither a dataclass nor an
        Enum, or for a name already taken by another class.
        """
        if cls is None:
            return lambda inner: self.register(inner, name=name)
        if not isinstance(cls, type) or not (
            dataclasses.is_dataclass(cls) or issubclass(cls, enum.Enum)
        ):
            raise ValidationError(
                f"only dataclasses and Enum classes can be registered, not {cls!r}"
            )
        self._add(cls, cls.__name__ if name is None else name)
        return cls

    def _add(self, cls: type, name: str) -> None:
        if not isinstance(name, str) or not name or "\x00" in name:
            raise ValidationError(f"a registered name must be a non-empty str, not {name!r}")
        with self._lock:
            taken_by = self._by_name.get(name)
            if taken_by is not None and taken_by is not cls:
                raise ValidationError(
                    f"the name {name!r} is already registered for {taken_by.__qualname__}; "
                    f"register {cls.__qualname__} under another name"
                )
            known_as = self._by_class.get(cls)
            if known_as is not None and known_as != name:
                raise ValidationError(f"{cls.__qualname__} is already registered as {known_as!r}")
            self._by_name[name] = cls
            self._by_class[cls] = name
            self.generation += 1

    def name_of(self, cls_or_instance: Any) -> str | None:
        """The registered name of a class or of an instance's class, or None."""
        cls = cls_or_instance if isinstance(cls_or_instance, type) else type(cls_or_instance)
        return self._by_class.get(cls)

    def class_for(self, name: str) -> type | None:
        """The class registered under ``name``, or None."""
        return self._by_name.get(name)

    def classes(self) -> dict[type, str]:
        """A copy of the registered classes and their names."""
        with self._lock:
            return dict(self._by_class)

    def __contains__(self, item: object) -> bool:
        return self.name_of(item) is not None

    def __len__(self) -> int:
        return len(self._by_name)
