"""The model cache dir: big parts, by folder/name/version, verified before they land.

Layout: ``<cache_dir>/big/<folder>/<name>/<version>-<sha256>``; names follow
:mod:`coffer.names`, so each is a safe single path component. Temporary
files start with a dot, which no name may, so they never clash with an entry.

Invariants:

- An entry appears only by ``rename`` of a temporary file that holds the
  announced number of bytes, all of them authenticated on the way in (see
  :mod:`cofferd.resources.flight`); a failed or abandoned download removes
  its temporary file. Readers therefore never see a partial file.
- Storing a version evicts the older versions of the same resource.
- Temporary files of a process that died mid-download are removed when the
  next process builds its :class:`BigPartCache`.
- A cached file is not trusted blindly: it is decrypted with authentication
  on every read, and the caller evicts it if that fails. That is also why
  entries are not fsynced: a file torn by a power cut fails authentication
  and is fetched again, at the cost of one download rather than of a
  disk flush on every store.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from cofferd.resources.wire import ResourceInfo

log = logging.getLogger(__name__)

_TEMP_PREFIX = ".tmp-"


class BigPartCache:
    """Verified big parts under one directory, shared by the threads of one process.

    Build one per cache dir per process, at start-up: building it removes the
    temporary files a process that died mid-download left behind.
    """

    def __init__(self, cache_dir: Path) -> None:
        self._root = cache_dir / "big"
        removed = self.remove_temporary()
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted download", removed)

    @property
    def root(self) -> Path:
        return self._root

    def path_for(self, info: ResourceInfo) -> Path:
        return self._root / info.folder / info.name / f"{info.version}-{info.big_sha256}"

    def lookup(self, info: ResourceInfo) -> Path | None:
        """The entry for ``info``'s version if present with the announced size, else None."""
        path = self.path_for(info)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            # An unusable cache dir costs a download, not the load.
            log.warning("cannot use the cache for %s/%s: %s", info.folder, info.name, exc.strerror)
            return None
        if size != info.big_size:
            # Cannot come from store(); someone else wrote it. Not ours to trust.
            self.evict(path)
            return None
        return path

    def new_temporary(self, info: ResourceInfo) -> tuple[int, Path]:
        """An empty temporary file beside ``info``'s entry, open for writing: (fd, path).

        Raises OSError if the cache dir cannot take it.
        """
        directory = self.path_for(info).parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(dir=directory, prefix=_TEMP_PREFIX)
        return fd, Path(name)

    def install(self, info: ResourceInfo, tmp: Path) -> Path:
        """Rename the temporary file ``tmp`` into ``info``'s entry; drop older versions.

        The caller has checked every byte (see :mod:`cofferd.resources.flight`).
        """
        target = self.path_for(info)
        os.replace(tmp, target)
        self.evict_older(info)
        return target

    def evict(self, path: Path) -> None:
        if _remove(path, "evict"):
            log.info("evicted %s from the cache", path.relative_to(self._root))

    def evict_older(self, info: ResourceInfo) -> None:
        """Remove every entry of ``info``'s resource older than its version."""
        directory = self.path_for(info).parent
        keep = self.path_for(info).name
        try:
            entries = list(directory.iterdir())
        except OSError as exc:
            log.warning("cannot list the cache of %s/%s: %s", info.folder, info.name, exc.strerror)
            return
        for entry in entries:
            if entry.name.startswith(".") or entry.name == keep:
                continue
            version, _, _ = entry.name.partition("-")
            if not version.isdigit() or int(version) <= info.version:
                self.evict(entry)

    def remove_temporary(self) -> int:
        """Remove temporary files left by a process that died mid-download.

        Only for start-up, when no download of this process can be under way.
        A file that cannot be removed is logged and left: it costs disk space,
        not correctness (no name can match it).
        """
        try:
            leftovers = list(self._root.glob(f"*/*/{_TEMP_PREFIX}*"))
        except OSError as exc:
            log.warning("cannot look for leftovers in the cache: %s", exc.strerror)
            return 0
        return sum(_remove(path, "remove") for path in leftovers)


def _remove(path: Path, verb: str) -> bool:
    """Unlink ``path``; False if it was gone already or cannot go (logged)."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("cannot %s %s from the cache: %s", verb, path.name, exc.strerror)
        return False
    return True
