"""A bounded memo for the hot path: what is derived from a request's text, kept per text."""

from __future__ import annotations

MEMO_ENTRIES = 4096


class Memo(dict):
    """A dict that forgets everything when full: lookups at C speed on the hot path, bounded memory."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def __setitem__(self, key, value) -> None:
        if len(self) >= self.capacity and key not in self:
            self.clear()
        super().__setitem__(key, value)
