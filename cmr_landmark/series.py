"""The series buffer: collect the phases of a slice, then release them together as one batch.

Images are grouped by (image_series_index, slice). A group is released, its items sorted by phase,

- as soon as it holds ``phases_per_slice`` distinct phases, when that number is known (from the ISMRMRD header's
  encoding limits, :func:`phases_per_slice_from_header`);
- otherwise when the next image of the same series belongs to another slice (the scanner sends a slice's phases
  together; images of another series in between, e.g. two series streamed interleaved, do not end it);
- when a phase arrives a second time in a group (a repetition or a second set): what is held is released first
  and the new image starts a fresh group, so no batch holds two images of one phase;
- at the end of the stream (:meth:`SeriesBuffer.flush`), whatever is still held: slices with missing phases
  are released incomplete rather than lost.

A phase number at or beyond a known ``phases_per_slice`` means the count was wrong for this stream (a
retrospectively gated recon that bins the beat into another number of phases than it acquired): the slice has
been split, and a warning says so once per stream (the gadget's ``phases_per_slice`` parameter sets the count).

One buffer serves one stream: make a new one per connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import ismrmrd.xsd

log = logging.getLogger(__name__)

Item = TypeVar("Item")
GroupKey = tuple[int, int]  # (image_series_index, slice)


@dataclass
class SliceBatch(Generic[Item]):
    """The buffered images of one slice of one series, sorted by phase."""

    series_index: int
    slice: int
    phases: list[int] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)


def phases_per_slice_from_header(header: ismrmrd.xsd.ismrmrdHeader | None) -> int | None:
    """encodingLimits.phase.maximum + 1 of the first encoding, or None when the header does not say."""
    try:
        limit = header.encoding[0].encodingLimits.phase
    except (AttributeError, IndexError):
        return None
    if limit is None or limit.maximum is None:
        return None
    return int(limit.maximum) + 1


class SeriesBuffer(Generic[Item]):
    """Groups items by (series index, slice) and releases complete slices; see the module docstring."""

    def __init__(self, phases_per_slice: int | None = None) -> None:
        if phases_per_slice is not None and phases_per_slice < 1:
            raise ValueError(f"phases_per_slice must be at least 1, got {phases_per_slice}")
        self.phases_per_slice = phases_per_slice
        self._groups: dict[GroupKey, dict[int, Item]] = {}
        self._last_slice: dict[int, int] = {}  # per series index, the slice of its latest image
        self._warned_phase_count = False

    def add(self, item: Item, series_index: int, slice_index: int, phase: int) -> list[SliceBatch[Item]]:
        """Buffer ``item``; return the batches this releases (often none), oldest first."""
        key = (int(series_index), int(slice_index))
        released: list[SliceBatch[Item]] = []
        if self.phases_per_slice is not None and int(phase) >= self.phases_per_slice and not self._warned_phase_count:
            self._warned_phase_count = True
            log.warning("image phase %d in series %d slice %d, but %d phases per slice were expected: slices are "
                        "split; set the gadget's phases_per_slice to the recon's phase count or slice_change",
                        int(phase), key[0], key[1], self.phases_per_slice)
        previous_slice = self._last_slice.get(key[0])
        if self.phases_per_slice is None and previous_slice is not None and previous_slice != key[1]:
            released += self._release((key[0], previous_slice))
        group = self._groups.get(key)
        if group is not None and int(phase) in group:
            released += self._release(key)
        self._groups.setdefault(key, {})[int(phase)] = item
        self._last_slice[key[0]] = key[1]
        if self.phases_per_slice is not None and len(self._groups[key]) >= self.phases_per_slice:
            released += self._release(key)
        return released

    def flush(self) -> list[SliceBatch[Item]]:
        """Release everything still held (end of stream), in the order the groups started."""
        released: list[SliceBatch[Item]] = []
        for key in list(self._groups):
            released += self._release(key)
        self._last_slice.clear()
        return released

    def _release(self, key: GroupKey) -> list[SliceBatch[Item]]:
        group = self._groups.pop(key, None)
        if not group:
            return []
        phases = sorted(group)
        return [SliceBatch(key[0], key[1], phases, [group[phase] for phase in phases])]
