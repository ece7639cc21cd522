"""The patches an adapter makes, kept so that uninstalling restores exactly what was there.

Every adapter that wraps a library's function or method does it through one
:class:`Patches` object: :meth:`Patches.wrap` builds the wrapper around the library's own
function and puts it in place (marking it with that original, so a second install wraps the
original again rather than our wrapper) and
:meth:`Patches.restore` undoes every replacement in reverse order, deleting what was not
there before (a method inherited from a base class comes back by deletion, not by copying
the base's function onto the subclass).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

#: Attribute on a wrapper naming the function it replaced.
MARK = "_otel_perf_original"
_MISSING = object()


def original_of(function: Any) -> Any:
    """What ``function`` (one of our wrappers) replaced, or None when it is not ours."""
    return getattr(function, MARK, None)


class Patches:
    """Replacements made by one adapter (``name`` is for messages)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._done: list[tuple[Any, str, Any]] = []

    @property
    def active(self) -> bool:
        return bool(self._done)

    def wrap(self, owner: Any, attribute: str, make: Callable[[Any], Any]) -> Any:
        """Replace ``owner.attribute`` by ``make(original)``; return the wrapper.

        ``original`` is the library's own function even when ``owner.attribute`` is already
        a wrapper of ours (installing twice never stacks wrappers).
        """
        own = vars(owner).get(attribute, _MISSING) if hasattr(owner, "__dict__") else _MISSING
        current = getattr(owner, attribute)
        original = original_of(current) or current
        wrapper = make(original)
        with contextlib.suppress(AttributeError, TypeError):  # a builtin: not markable
            setattr(wrapper, MARK, original)
        setattr(owner, attribute, wrapper)
        if own is not _MISSING and original_of(own) is not None:
            own = original_of(own)
        self._done.append((owner, attribute, own))
        return wrapper

    def restore(self) -> None:
        """Undo every replacement, last first."""
        while self._done:
            owner, attribute, own = self._done.pop()
            if own is _MISSING:
                with contextlib.suppress(AttributeError):
                    delattr(owner, attribute)
            else:
                setattr(owner, attribute, own)
