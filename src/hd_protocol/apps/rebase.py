"""Rebase a rejected pane edit onto the newer text (SPEC 6.1.1).

A writer whose ``op`` was ``rejected`` holds three texts: ``base`` (the revision it
edited), ``mine`` (its edit) and ``theirs`` (the current text from the ``rejected``
event). Each side's change is read as ONE replaced region, found by trimming the
common prefix and then the common suffix against ``base``:

    base[a:b] -> replacement        (mine:  [a1, b1) -> R;  theirs: [a2, b2) -> T)

``rebase`` applies my change to ``theirs`` at the same place:

- my region ends at or before theirs starts (``b1 <= a2``): it is applied at the same
  offsets — the text before ``a2`` is unchanged in ``theirs``;
- my region starts at or after theirs ends (``a1 >= b2``): it is applied shifted by
  the length difference their change made;
- both are insertions at the same offset (covered by the first rule): mine goes
  first;
- otherwise the regions overlap, and my edit wins there (the rebased op is the later
  write, SPEC 6.1.1 "only truly conflicting regions resolve last-writer-wins"): the
  union ``[min(a1, a2), max(b1, b2))`` of ``base`` — which ``theirs`` has replaced — is
  replaced by my version of that union, ``base[min:a1] + R + base[b1:max]``; their
  change inside it is dropped.

Shortcuts: ``mine == base`` gives ``theirs``; ``theirs == base`` or ``theirs == mine``
gives ``mine``.

Where a region is ambiguous (an insertion inside a run of repeated characters, e.g.
``"ab" -> "abab"``), the maximal common prefix decides, so the region sits as far
right as it can; the result still holds both edits, but an insertion may land at the
other end of the run than the writer's cursor was.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Change:
    """``base[start:end]`` was replaced by ``text``."""

    start: int
    end: int
    text: str

    @property
    def delta(self) -> int:
        return len(self.text) - (self.end - self.start)


def change_between(base: str, new: str) -> Change:
    """The single region replaced to turn ``base`` into ``new`` (prefix first)."""
    limit = min(len(base), len(new))
    prefix = 0
    while prefix < limit and base[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and base[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    return Change(prefix, len(base) - suffix, new[prefix:len(new) - suffix])


def rebase(base: str, mine: str, theirs: str) -> str:
    """My edit (``base -> mine``) applied to ``theirs``; see the module doc."""
    if mine == base:
        return theirs
    if theirs in (base, mine):
        return mine
    my = change_between(base, mine)
    their = change_between(base, theirs)
    if my.end <= their.start:
        # Entirely before their change: offsets are the same in theirs.
        return theirs[:my.start] + my.text + theirs[my.end:]
    if my.start >= their.end:
        # Entirely after their change: shift by what their change added/removed.
        d = their.delta
        return theirs[:my.start + d] + my.text + theirs[my.end + d:]
    # Overlap: my version of the union region replaces theirs.
    lo, hi = min(my.start, their.start), max(my.end, their.end)
    mine_union = base[lo:my.start] + my.text + base[my.end:hi]
    return theirs[:lo] + mine_union + theirs[hi + their.delta:]
