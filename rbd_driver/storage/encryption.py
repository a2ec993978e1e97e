# SPDX-License-Identifier: Apache-2.0
"""Mechanics of librbd's LUKS encryption layer: format, load, and copies through it.

librbd 16.2 formats an image LUKS1 or LUKS2 (``Image.encryption_format``:
a header at the start of the image, 2 or 16 MiB, and the encryption loaded
on that handle) and opens one with its passphrase (``Image.encryption_load``).
A loaded handle sees the image without the header (``size()`` is smaller by
it) and reads and writes plaintext; the image itself only ever holds
ciphertext. A clone holds its parent's header and opens with the parent's
passphrase; librbd refuses to format a clone (EOPNOTSUPP) before Ceph 18,
whose ``encryption_load2`` opens a clone with a key of its own
(:func:`layered_supported`).

Nothing here chooses a key or a method: that is policy
(:mod:`rbd_driver.backends.encrypted`). A :class:`Key` carries the
passphrase the key manager returned; its ``repr`` never shows it, and no
error raised here holds it (librbd's own messages name only the image and
the format). Which secret an image was formatted with is kept in the image's
metadata (:data:`METADATA_KEY`), by UUID, never the passphrase.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

from rbd_driver import exception
from rbd_driver.storage import datapath
from rbd_driver.storage.rados_client import RadosClient

__all__ = ["FORMATS", "METADATA_KEY", "Key", "copy_into_encrypted", "export_decrypted",
           "format_image", "guest_size", "import_encrypted", "layered_supported", "load",
           "open_encrypted", "record", "recorded", "resize_guest"]

LOG = logging.getLogger(__name__)

FORMATS = ("luks1", "luks2")
#: The LUKS header librbd 16.2 writes (measured); checked after each format.
HEADER_BYTES = {"luks1": 2 << 20, "luks2": 16 << 20}
#: Image metadata key holding ``{"format": ..., "secret_uuid": ...}`` of an encrypted image.
METADATA_KEY = "rbd_driver.encryption"


@dataclasses.dataclass(frozen=True)
class Key:
    """A passphrase and the format it opens; ``repr`` and ``str`` never show the passphrase."""

    format: str
    secret_uuid: str
    passphrase: bytes = dataclasses.field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise exception.InvalidArgument(op="encryption", target=self.secret_uuid,
                                             detail=f"format {self.format!r} is not one of "
                                             f"{', '.join(FORMATS)}")


def layered_supported(client: RadosClient) -> bool:
    """Whether this librbd can give a clone a key of its own (Ceph 18's
    ``encryption_load2``). False on pacific; untested, as no Reef is at hand."""
    return hasattr(client.rbd.Image, "encryption_load2")


def _constant(client: RadosClient, fmt: str) -> int:
    return int(getattr(client.rbd, f"RBD_ENCRYPTION_FORMAT_{fmt.upper()}"))


def load(client: RadosClient, image: Any, key: Key, *, pool: str, name: str,
         snapshot: str | None = None) -> None:
    """Load ``key`` on the open ``image``: its reads and writes are now plaintext.

    :raises EncryptionKeyRejected: the passphrase or the format does not open it,
        or it is not encrypted at all.
    """
    try:
        with client.translate("load encryption", pool=pool, image=name, snapshot=snapshot):
            image.encryption_load(_constant(client, key.format), key.passphrase)
    except (exception.PermissionDenied, exception.InvalidArgument) as err:
        why = ("the passphrase is wrong" if isinstance(err, exception.PermissionDenied)
               else f"it is not a {key.format} image (no such header)")
        raise exception.EncryptionKeyRejected(
            target=_where(pool, name, snapshot), secret_uuid=key.secret_uuid,
            format=key.format, detail=why) from err


def format_image(client: RadosClient, image: Any, key: Key, *, pool: str, name: str,
                 size: int) -> None:
    """Format the open, new, flat ``image`` with ``key`` so that it shows ``size`` bytes.

    The encryption stays loaded on the handle: what is written next is
    ciphertext in the image.

    :raises NotSupported: the image is a clone (librbd before Ceph 18).
    """
    with client.translate("format encryption", pool=pool, image=name):
        # Room for the header first: librbd refuses to format an image not larger than it.
        raw = size + HEADER_BYTES[key.format]
        image.resize(raw)
        image.encryption_format(_constant(client, key.format), key.passphrase)
        shown = int(image.size())
        if shown != size:
            # A loaded handle resizes the raw image: add the header to the size asked.
            image.resize(size + raw - shown)


def _where(pool: str, name: str, snapshot: str | None = None) -> str:
    return f"{pool}/{name}" + (f"@{snapshot}" if snapshot else "")


@contextlib.contextmanager
def open_encrypted(client: RadosClient, pool: str, name: str, key: Key | None,
                   snapshot: str | None = None, read_only: bool = False,
                   op: str = "open image") -> Iterator[Any]:
    """Yield the open image with ``key`` loaded (plain when ``key`` is None); closed on exit.

    :raises EncryptionKeyRejected: the key does not open it.
    """
    with client.open_image(pool, name, snapshot=snapshot, read_only=read_only,
                           op=op) as image:
        if key is not None:
            load(client, image, key, pool=pool, name=name, snapshot=snapshot)
        yield image


def record(client: RadosClient, pool: str, name: str, fmt: str, secret_uuid: str) -> None:
    """Note in the image's metadata which secret (by UUID) and format open it."""
    with client.open_image(pool, name, op="record encryption") as image:
        image.metadata_set(METADATA_KEY, json.dumps({"format": fmt,
                                                     "secret_uuid": secret_uuid}))


def recorded(client: RadosClient, pool: str, name: str,
             snapshot: str | None = None) -> tuple[str, str] | None:
    """Return (format, secret UUID) the image's metadata names, or None if it names none."""
    with client.open_image(pool, name, snapshot=snapshot, read_only=True,
                           op="read encryption record") as image:
        try:
            value = image.metadata_get(METADATA_KEY)
        except KeyError:
            return None
    try:
        found = json.loads(value)
        return str(found["format"]), str(found["secret_uuid"])
    except (ValueError, KeyError, TypeError) as err:
        raise exception.StorageError(op="read encryption record", target=_where(pool, name),
                                     detail=f"metadata {METADATA_KEY} is not understood") from err


def guest_size(client: RadosClient, pool: str, name: str, key: Key,
               snapshot: str | None = None) -> tuple[int, int]:
    """Return (size the guest sees, raw size) of an encrypted image."""
    with client.open_image(pool, name, snapshot=snapshot, read_only=True,
                           op="get size") as image:
        raw = int(image.size())
        load(client, image, key, pool=pool, name=name, snapshot=snapshot)
        return int(image.size()), raw


def resize_guest(client: RadosClient, pool: str, name: str, key: Key, size: int) -> None:
    """Make the guest see ``size`` bytes: the raw image is that plus the header."""
    with client.open_image(pool, name, op="resize") as image:
        raw = int(image.size())
        load(client, image, key, pool=pool, name=name)
        shown = int(image.size())
        if size != shown:
            image.resize(size + raw - shown)


def import_encrypted(client: RadosClient, source: datapath.ImportSource, pool: str, name: str,
                     key: Key, *, size: int | None = None, window: int = datapath.DEFAULT_WINDOW,
                     progress: datapath.ProgressCallback | None = None,
                     cancel: threading.Event | None = None) -> datapath.CopyStats:
    """Copy a local raw file or stream into a new image ``pool/name`` formatted with ``key``.

    The copy engine of :mod:`.datapath` writes through the encryption layer:
    only ciphertext reaches the cluster. The guest sees the source's size.
    Atomic, as :func:`~rbd_driver.storage.datapath.import_to_image`.
    """
    def prepare(image: Any) -> None:
        format_image(client, image, key, pool=pool, name=name, size=int(image.size()))

    stats = datapath.import_to_image(client, source, pool, name, size=size, window=window,
                                     progress=progress, cancel=cancel, prepare=prepare)
    record(client, pool, name, key.format, key.secret_uuid)
    return stats


class _ImageStream:
    """A readable stream of the data ``extents`` of an open image (``data_extents()``),
    with ``window`` reads of ``chunk`` in flight ahead of the reader."""

    def __init__(self, client: RadosClient, image: Any, extents: list[tuple[int, int]],
                 chunk: int, window: int, where: tuple[str, str, str | None]) -> None:
        self.client, self.image, self.chunk = client, image, chunk
        self.extents, self.window, self.where = extents, window, where
        self.todo = iter([(pos, min(chunk, end - pos)) for start, end in extents
                          for pos in range(start, end, chunk)])
        self.exhausted = False
        self.pending: collections.deque[tuple[int, int, threading.Event, list[Any]]] = \
            collections.deque()
        self.buffer = memoryview(b"")

    def data_extents(self) -> list[tuple[int, int]]:
        return self.extents

    def _fill(self) -> None:
        while len(self.pending) < self.window and not self.exhausted:
            piece = next(self.todo, None)
            if piece is None:
                self.exhausted = True
                return
            offset, length = piece
            done = threading.Event()
            box: list[Any] = []  # (return value, data) of the read, once done

            def callback(completion: Any, data: bytes | None = None, box: list[Any] = box,
                         done: threading.Event = done) -> None:
                box.append((completion.get_return_value(), data))
                done.set()

            pool, name, snapshot = self.where
            with self.client.translate("read", pool=pool, image=name, snapshot=snapshot):
                self.image.aio_read(offset, length, callback)
            self.pending.append((offset, length, done, box))

    def read(self, n: int) -> bytes:
        if not self.buffer:
            self._fill()
            if not self.pending:
                return b""
            offset, length, done, box = self.pending.popleft()
            done.wait()
            ret, data = box[0]
            if ret < 0 or data is None or len(data) != length:
                pool, name, snapshot = self.where
                datapath.aio_error(self.client, "read", (offset, length, ret, data), pool, name,
                                   snapshot)
            self.buffer = memoryview(data)
            self._fill()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return bytes(out)

    def drain(self) -> None:
        """Wait for the reads in flight before the image closes."""
        while self.pending:
            self.pending.popleft()[2].wait()


#: Reads of a copy through the encryption layer: one default RBD object.
CHUNK = 4 << 20


def _allocated(image: Any, size: int) -> list[tuple[int, int]]:
    """Sorted, merged (start, end) of what the image (or its parent) holds, whole objects."""
    found: list[tuple[int, int]] = []

    def collect(offset: int, length: int, exists: bool) -> None:
        if exists and length:
            found.append((offset, offset + length))

    if size:
        image.diff_iterate(0, size, None, collect, include_parent=True, whole_object=True)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _shifted(raw: list[tuple[int, int]], header: int, size: int) -> list[tuple[int, int]]:
    """Raw extents as the encryption layer shows them: ``header`` bytes earlier, within ``size``.

    Computed on the raw image because the layer maps a guest offset ``g`` to
    ``g + header`` and nothing else; never-written parts read as zeros.
    """
    out = []
    for start, end in raw:
        start, end = max(0, start - header), min(size, end - header)
        if end > start:
            out.append((start, end))
    return out


def copy_into_encrypted(client: RadosClient, src_pool: str, src_name: str,
                        src_snapshot: str | None, src_key: Key | None, pool: str, name: str,
                        key: Key, *, window: int = datapath.DEFAULT_WINDOW,
                        progress: datapath.ProgressCallback | None = None,
                        cancel: threading.Event | None = None) -> datapath.CopyStats:
    """Copy what a guest sees of ``src_pool/src_name@src_snapshot`` (opened with
    ``src_key``, or plain when None) into a new flat image ``pool/name`` formatted with ``key``.

    Only the extents the source holds (or its parents) are read, ``window``
    reads ahead; the writes go through the copy engine of :mod:`.datapath`
    and the encryption layer (zeros are not written: a never-written sector
    of an encrypted image reads as zeros). Atomic.

    :raises EncryptionKeyRejected: ``src_key`` does not open the source.
    :raises ImageExists: ``pool/name`` exists.
    """
    with client.open_image(src_pool, src_name, snapshot=src_snapshot, read_only=True,
                           op="copy through encryption") as src:
        with client.translate("list extents", pool=src_pool, image=src_name,
                              snapshot=src_snapshot):
            raw_size = int(src.size())
            raw = _allocated(src, raw_size)
        if src_key is not None:
            load(client, src, src_key, pool=src_pool, name=src_name, snapshot=src_snapshot)
        size = int(src.size())
        extents = _shifted(raw, raw_size - size, size)
        stream = _ImageStream(client, src, extents, CHUNK, window,
                              (src_pool, src_name, src_snapshot))
        try:
            return import_encrypted(client, stream, pool, name, key, size=size, window=window,
                                    progress=progress, cancel=cancel)
        finally:
            stream.drain()


def export_decrypted(client: RadosClient, pool: str, name: str, dest: str | os.PathLike[str],
                     key: Key, *, snapshot: str | None = None,
                     window: int = datapath.DEFAULT_WINDOW,
                     progress: datapath.ProgressCallback | None = None,
                     cancel: threading.Event | None = None) -> datapath.CopyStats:
    """Write the plaintext of an encrypted image (at ``snapshot``) into the local file ``dest``
    (mode 0600, atomic, sparse), as :func:`~rbd_driver.storage.datapath.export_from_image` does.

    :raises EncryptionKeyRejected: ``key`` does not open it; nothing was written.
    """
    def on_open(image: Any) -> None:
        load(client, image, key, pool=pool, name=name, snapshot=snapshot)

    return datapath.export_from_image(client, pool, name, dest, snapshot=snapshot, window=window,
                                      progress=progress, cancel=cancel, on_open=on_open)
