"""What every lab and rig shares: built on entering a `with` block, closed on leaving it, and closed as far
as it got when building fails half-way (also on Ctrl-C)."""

from __future__ import annotations

from typing import Self


class Rig:
    """`with X(...) as x:` checks that x can be built (nothing made yet: a refusal leaves everything as it
    was, for example another lab's state), builds it, and closes what was built when building fails; leaving
    the block closes it. Subclasses give build() and close(), and may give ready()."""

    def ready(self) -> None:
        """Raises when the rig must not be built; it has made nothing yet."""

    def build(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.ready()
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
