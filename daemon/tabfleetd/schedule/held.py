"""Images made while their output directory could not take them, held until it can.

An image costs a site generation (and on ChatGPT a minute of an account's
quota); a full disk must not throw it away.  The daemon keeps it in memory,
bounded: past the bound the oldest is dropped (and logged), and its task is
simply generated again later.
"""

from __future__ import annotations

import collections
import logging

log = logging.getLogger(__name__)


class HeldImages:
    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.images: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        self.size = 0

    def hold(self, key: bytes, data: bytes) -> None:
        self.drop(key)
        if len(data) > self.limit:
            log.warning("image of task %s (%d bytes) is over held_images_mb; it will be made again", key.decode(), len(data))
            return
        self.images[key] = data
        self.size += len(data)
        while self.size > self.limit:
            old, dropped = self.images.popitem(last=False)
            self.size -= len(dropped)
            log.warning("held images over held_images_mb: dropped task %s's image; it will be made again", old.decode())

    def get(self, key: bytes) -> bytes | None:
        return self.images.get(key)

    def drop(self, key: bytes) -> None:
        data = self.images.pop(key, None)
        if data is not None:
            self.size -= len(data)

    def drop_job(self, job_id: str) -> None:
        """A pruned job's images: nobody will write them now."""
        prefix = f"{job_id}/".encode()
        for key in [k for k in self.images if k.startswith(prefix)]:
            self.drop(key)

    def __len__(self) -> int:
        return len(self.images)
