"""Visit images for the browser: thumbnails of a few KB made once from the best crop, and
the files themselves, only ever from under the state directory.

A path comes from the database (`crop_file`, `context_file`, summary image names), never
from the URL, and is still checked: it must resolve inside its root folder, so a row or a
symlink pointing elsewhere is not served.

Caching: an ended visit's crop never changes again, so its images are `immutable` for a
year; an open visit's best crop may still be replaced, so those are `no-store` (the
thumbnail is made again when the crop file is newer than it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

THUMB_SIDE = 200  # px, longer side: a phone's two-column grid at 2x
THUMB_QUALITY = 72
IMMUTABLE = "private, max-age=31536000, immutable"
NO_STORE = "no-store"


def cache_control(ended: bool) -> str:
    return IMMUTABLE if ended else NO_STORE


def safe_file(root: Path, rel: str | None) -> Path | None:
    """`root/rel` when it is an existing file inside `root` (symlinks resolved), else None."""
    if not rel or "\x00" in rel or os.path.isabs(rel):
        return None
    base = root.resolve()
    try:
        path = (base / rel).resolve()
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(base) or path == base or not path.is_file():
        return None
    return path


class Thumbnails:
    """Thumbnails under `<state_dir>/thumbs/`, mirroring the crops' day folders so whole
    days can be pruned with them (`prune`)."""

    def __init__(self, state_dir: Path, side: int = THUMB_SIDE,
                 quality: int = THUMB_QUALITY) -> None:
        self.state_dir = Path(state_dir)
        self.crops = self.state_dir / "crops"
        self.root = self.state_dir / "thumbs"
        self.side = side
        self.quality = quality

    def image(self, rel: str | None) -> Path | None:
        """A stored visit image (crop or context frame) named relative to the state dir."""
        return safe_file(self.crops, _below_crops(rel))

    def thumb(self, rel: str | None) -> Path | None:
        """The thumbnail of the crop `rel`, made now if missing or older than the crop (the
        crop itself when it cannot be written); None when the crop is missing or bad."""
        src = self.image(rel)
        if src is None:
            return None
        dest = self.root / src.relative_to(self.crops.resolve())
        try:
            if dest.stat().st_mtime >= src.stat().st_mtime:
                return dest
        except FileNotFoundError:
            pass
        try:
            data = make_thumbnail(src.read_bytes(), self.side, self.quality)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            log.warning("web: cannot make a thumbnail of %s: %s", src, exc)
            return None
        _write_atomically(dest, data)
        return dest if dest.is_file() else src  # could not write it: the crop will do

    def prune(self, before_day: str) -> int:
        """Remove thumbnail day folders older than `before_day` (YYYY-MM-DD), as retention
        removes the crops; how many files went."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for day in self.root.iterdir():
            if day.is_dir() and day.name < before_day:
                for f in day.iterdir():
                    with contextlib.suppress(OSError):
                        f.unlink()
                        removed += 1
                with contextlib.suppress(OSError):
                    day.rmdir()
        return removed


def _below_crops(rel: str | None) -> str | None:
    """Database paths are relative to the state dir and start with `crops/`."""
    if not rel:
        return None
    head, sep, tail = rel.replace("\\", "/").partition("/")
    return tail if sep and head == "crops" else None


def make_thumbnail(jpeg: bytes, side: int = THUMB_SIDE, quality: int = THUMB_QUALITY) -> bytes:
    with Image.open(io.BytesIO(jpeg)) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=quality, optimize=True, progressive=True)
    return out.getvalue()


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:  # a full disk: serve the crop itself next time, log once a while
        log.warning("web: cannot write thumbnail %s: %s", path, exc)
