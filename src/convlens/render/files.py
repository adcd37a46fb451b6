"""Writing results to files safely: destinations checked before the work, files replaced atomically.

:func:`check_destination` refuses, before any work starts, a destination that could not be written
(an empty name, a folder, a missing or read-only folder, a kernel file). :func:`atomic_output` writes
to a temporary file in the destination's folder and renames it over the destination only when the
writer succeeded: a render that fails or is interrupted leaves an existing file as it was, and
never leaves a half-written one. Devices (``/dev/null``, ``/dev/stdout``) are written in place.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import ConvlensError


def check_destination(path: str | os.PathLike | None, option: str = "-o", probe: bool = True) -> Path | None:
    """``path`` as a Path when a file can be written there (None stays None); ``ConvlensError``
    naming ``option`` and saying what to do otherwise. ``probe``: also create and remove a temporary
    file in the folder, as :func:`atomic_output` will (before the work starts)."""
    if path is None:
        return None
    text = _text(path, option)
    if not text.strip():
        raise ConvlensError(f"{option} is empty: give a file name")
    p = Path(text)
    if p.is_dir():
        raise ConvlensError(f"{option} {text!r} is a folder: give a file name inside it")
    if _is_device(p):
        return p
    folder = p.parent
    if not folder.exists():
        raise ConvlensError(f"{option} {text!r}: folder {str(folder)!r} does not exist (create it first)")
    if not folder.is_dir():
        raise ConvlensError(f"{option} {text!r}: {str(folder)!r} is not a folder")
    if not probe:
        return p
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{p.name}.", suffix=".probe"):
            pass
    except OSError as e:
        raise ConvlensError(f"{option} {text!r}: cannot write into {str(folder)!r} ({e.strerror or e}); "
                            "choose another file") from None
    return p


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` with the same suffix (so writers that pick a format by
    suffix pick the same one); when the block succeeds, rename it over ``path``, else remove it. An
    ``OSError`` (a full disk, a folder that went away) becomes one ``ConvlensError`` line."""
    p = check_destination(path, "the output path", probe=False)  # its own mkstemp is the probe
    if _is_device(p):
        try:
            yield p
        except OSError as e:
            raise ConvlensError(f"cannot write {str(p)!r}: {e.strerror or e}") from None
        return
    try:
        fd, name = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=p.suffix)
    except OSError as e:
        raise ConvlensError(f"cannot write into {str(p.parent)!r}: {e.strerror or e}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _mode_for(p))
        os.replace(tmp, p)
    except OSError as e:
        raise ConvlensError(f"cannot write {str(p)!r}: {e.strerror or e}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """``text`` into ``path`` (UTF-8), atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _text(path: object, option: str) -> str:
    try:
        text = os.fspath(path)
    except TypeError:
        raise ConvlensError(f"{option} must be a file path, got {type(path).__name__}") from None
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    return text


def _is_device(p: Path) -> bool:
    """An existing path that is not a regular file or folder (a character device, a FIFO)."""
    try:
        mode = os.stat(p).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _mode_for(p: Path) -> int:
    """The permission bits the file would get from a plain ``open(p, 'w')``: the existing file's, or
    0o666 less the umask (a temporary file starts at 0o600)."""
    try:
        return stat.S_IMODE(os.stat(p).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
