"""Where finished images wait for the rest of their job and for the upload.

Images are kept in memory up to ``IMAGE_MEMORY_BUDGET_MB`` and the rest in files of a private
temporary folder (written and read off the event loop), so memory stays bounded however many
images are in flight. Files go once their job is settled, the folder when the store closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

from bot.segmind import GeneratedImage

if sys.platform != "win32":
    import fcntl

__all__ = ["HeldImage", "ImageStore"]

log = logging.getLogger(__name__)

_PREFIX = "imagine-bot-images-"
_BUILDING_PREFIX = "imagine-bot-new-"
_LOCK_NAME = ".lock"


def _sweep(parent: Path) -> None:
    """Delete the image folders of stores whose process is gone (see ``_make_folder``)."""
    if sys.platform == "win32":  # no flock: leave them to the system's temp cleaning
        return
    for folder in parent.glob(_PREFIX + "*"):
        try:
            with (folder / _LOCK_NAME).open("rb") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live store holds it
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue  # not ours to judge (no lock file, no permission)
        log.info("deleted %s, left by a process that did not shut down cleanly", folder)


class HeldImage:
    """One finished image, in memory or in a file, with what the result shows of it."""

    __slots__ = (
        "_data",
        "_path",
        "_released",
        "_store",
        "format",
        "height",
        "seed",
        "size",
        "width",
    )

    def __init__(
        self,
        store: ImageStore,
        image: GeneratedImage,
        *,
        data: bytes | None,
        path: Path | None,
    ) -> None:
        self._store = store
        self._data = data
        self._path = path
        self._released = False
        self.format = image.format
        self.width = image.width
        self.height = image.height
        self.seed = image.seed
        self.size = len(image.data)

    @property
    def on_disk(self) -> bool:
        return self._path is not None

    async def read(self) -> bytes:
        """The image's bytes (read in a worker thread when they are in a file)."""
        if self._path is not None:
            return await asyncio.to_thread(self._path.read_bytes)
        if self._data is None:
            raise RuntimeError("the image was already handed to an upload")
        return self._data

    def open(self) -> io.BufferedIOBase:
        """A binary file of the image for one upload; the caller closes it.

        An image in memory is handed over rather than shared: the returned
        ``BytesIO`` then owns the only reference to the bytes, so aiohttp's
        ``getbuffer()`` does not copy them while uploading (it copies a shared
        buffer), and this object no longer holds them.
        """
        if self._path is not None:
            return self._path.open("rb")
        data, self._data = self._data, None
        if data is None:
            raise RuntimeError("the image was already handed to an upload")
        return io.BytesIO(data)

    def release(self) -> None:
        """Give back its share of the memory budget, or delete its file. Idempotent."""
        if self._released:
            return
        self._released = True
        self._data = None
        if self._path is not None:
            self._store._forget_file(self._path)
        else:
            self._store._forget_bytes(self.size)

    def __repr__(self) -> str:
        where = "disk" if self._path is not None else "memory"
        return (
            f"HeldImage({self.format} {self.width}x{self.height}, seed={self.seed}, "
            f"{self.size} bytes in {where})"
        )


class ImageStore:
    """Holds images in memory up to ``memory_budget`` bytes, and in files beyond it."""

    def __init__(self, *, memory_budget: int, directory: Path | None = None) -> None:
        if memory_budget < 0:
            raise ValueError("memory_budget cannot be negative")
        self._budget = memory_budget
        self._parent = directory
        self._folder: Path | None = None
        self._in_memory = 0
        self._files = 0
        self._names = itertools.count(1)
        self._lock: BinaryIO | None = None  # held open (and locked) while the folder lives
        self._folder_lock = asyncio.Lock()

    @property
    def bytes_in_memory(self) -> int:
        return self._in_memory

    @property
    def files(self) -> int:
        """Images held in files right now."""
        return self._files

    async def hold(self, image: GeneratedImage) -> HeldImage:
        """Keep ``image`` until its job is settled; the caller drops its own reference."""
        size = len(image.data)
        if self._in_memory + size <= self._budget:
            self._in_memory += size
            return HeldImage(self, image, data=image.data, path=None)
        path: Path | None = None
        try:
            path = await self._folder_path() / f"{next(self._names)}.img"
            await asyncio.to_thread(path.write_bytes, image.data)
        except OSError as error:
            # A full or read-only disk must not cost the member their image: keep it in
            # memory over the budget and say so, rather than fail the job.
            log.warning("could not write an image to disk (%s); keeping it in memory", error)
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
            self._in_memory += size
            return HeldImage(self, image, data=image.data, path=None)
        self._files += 1
        return HeldImage(self, image, data=None, path=path)

    def close(self) -> None:
        """Delete the folder and whatever is left in it."""
        folder, self._folder = self._folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()
        self._files = 0

    async def _folder_path(self) -> Path:
        # Locked: the images of one job arrive together, and must share one folder.
        async with self._folder_lock:
            if self._folder is None:
                self._folder = await asyncio.to_thread(self._make_folder)
            return self._folder

    def _make_folder(self) -> Path:
        """In a worker thread: sweep what crashed processes left, then make our folder.

        Each live store holds an exclusive lock on ``.lock`` in its folder for as
        long as it lives: a folder whose lock can be taken belongs to a process that
        ended without closing its store (killed, out of memory), and goes. The folder
        is locked under a temporary name and only then renamed to the name the sweep
        looks at, so a sweep never sees a live folder unlocked.
        """
        parent = Path(self._parent) if self._parent is not None else Path(tempfile.gettempdir())
        _sweep(parent)
        building = Path(tempfile.mkdtemp(prefix=_BUILDING_PREFIX, dir=parent))
        lock = (building / _LOCK_NAME).open("wb")
        try:
            if sys.platform != "win32":
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            folder = building.with_name(_PREFIX + building.name.removeprefix(_BUILDING_PREFIX))
            building.rename(folder)
        except OSError:
            lock.close()
            shutil.rmtree(building, ignore_errors=True)
            raise
        self._lock = lock
        return folder

    def _forget_bytes(self, size: int) -> None:
        self._in_memory -= size

    def _forget_file(self, path: Path) -> None:
        self._files -= 1
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            log.warning("could not delete %s: %s", path, error)
