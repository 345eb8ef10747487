"""The studio's project database: SQLite in the project directory.

Images, classes and instances (COCO RLE) with per-image status and timestamps. Every write is
its own transaction, committed before the call returns, so a crash loses nothing that was
accepted. WAL mode and a busy timeout let several tabs (threads) read and write at once; each
call opens its own connection. The schema is versioned with ``PRAGMA user_version`` and
upgraded by the ordered ``MIGRATIONS`` on open.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samkit.errors import InputError
from samkit.io.formats import encode_rle, mask_bbox
from samkit.ops.rle import decode_coco_rle

DB_NAME = "samkit_project.sqlite"
STATUSES = ("todo", "in_progress", "done")
SOURCES = ("click", "box", "auto", "find", "brush", "import", "api")

# Each entry upgrades the schema by one version; never edit a released entry, append one.
MIGRATIONS: list[str] = [
    # 1: images, classes, instances
    """
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        file_name TEXT NOT NULL UNIQUE,      -- relative to the project's image directory
        width INTEGER, height INTEGER,      -- in EXIF orientation; NULL if unreadable
        sha256 TEXT,
        status TEXT NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'in_progress', 'done')),
        error TEXT,                         -- why the image could not be read, if it could not
        added_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE TABLE classes (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        color TEXT NOT NULL
    );
    CREATE TABLE instances (
        id INTEGER PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        class_id INTEGER NOT NULL REFERENCES classes(id),
        rle TEXT NOT NULL,                  -- COCO compressed RLE counts, (height, width) size
        area INTEGER NOT NULL,
        bbox_x INTEGER NOT NULL, bbox_y INTEGER NOT NULL,
        bbox_w INTEGER NOT NULL, bbox_h INTEGER NOT NULL,
        score REAL,
        source TEXT NOT NULL,
        created_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE INDEX instances_image ON instances(image_id);
    CREATE INDEX images_status ON images(status);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
           "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3"]


class StoreError(InputError):
    """A request the project database cannot honour (bad value)."""


class NotFound(StoreError):
    """An id that names nothing in the project."""


@dataclass(frozen=True)
class Instance:
    """One accepted object. ``bbox`` is XYWH in pixels; ``rle`` is COCO compressed counts."""

    id: int
    image_id: int
    class_id: int
    rle: str
    area: int
    bbox: tuple[int, int, int, int]
    score: float | None
    source: str
    created_at: float
    updated_at: float

    def mask(self, height: int, width: int) -> np.ndarray:
        """The ``(H, W)`` bool mask."""
        return decode_coco_rle({"size": [height, width], "counts": self.rle})

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "image_id": self.image_id, "class_id": self.class_id,
                "rle": self.rle, "area": self.area, "bbox": list(self.bbox),
                "score": self.score, "source": self.source, "created_at": self.created_at,
                "updated_at": self.updated_at}


def mask_record(mask: np.ndarray) -> tuple[str, int, tuple[int, int, int, int]]:
    """COCO RLE counts, area and XYWH box of an ``(H, W)`` bool mask."""
    mask = np.asarray(mask, dtype=bool)
    return encode_rle(mask)["counts"], int(mask.sum()), mask_bbox(mask)


class ProjectStore:
    """Open (creating or upgrading) the database of a project directory.

    Args:
        project_dir: The project directory; ``samkit_project.sqlite`` lives there.
    """

    def __init__(self, project_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(project_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / DB_NAME
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            self._migrate(db)

    # -- connection & schema ---------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: writers queue instead of failing)."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this samkit "
                f"({SCHEMA_VERSION}); upgrade samkit to open it"
            )
        for v in range(version, SCHEMA_VERSION):
            db.execute("BEGIN IMMEDIATE")
            for statement in _statements(MIGRATIONS[v]):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={v + 1}")
            db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        with self._read() as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])

    # -- images ----------------------------------------------------------------------------
    def add_image(self, file_name: str, width: int | None, height: int | None,
                  sha256: str | None, error: str | None = None) -> int:
        """Register an image (or refresh it if ``file_name`` is known); returns its id."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT id FROM images WHERE file_name=?", (file_name,)).fetchone()
            if row:
                db.execute("UPDATE images SET width=?, height=?, sha256=?, error=?, updated_at=? "
                           "WHERE id=?", (width, height, sha256, error, now, row["id"]))
                return int(row["id"])
            cur = db.execute(
                "INSERT INTO images (file_name, width, height, sha256, error, added_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (file_name, width, height, sha256, error, now, now),
            )
            return int(cur.lastrowid)

    def list_images(self, status: str | None = None, offset: int = 0,
                    limit: int | None = None, search: str | None = None
                    ) -> tuple[list[dict[str, Any]], int]:
        """Images with their instance counts, by id; and the total matching count."""
        if status is not None and status not in STATUSES and status != "error":
            raise StoreError(f"status must be one of {STATUSES} or 'error', got {status!r}")
        where, args = [], []
        if status == "error":
            where.append("error IS NOT NULL")
        elif status is not None:
            where.append("status=? AND error IS NULL")
            args.append(status)
        if search:
            where.append("file_name LIKE ?")
            args.append(f"%{search}%")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._read() as db:
            total = db.execute(f"SELECT COUNT(*) FROM images {clause}", args).fetchone()[0]
            rows = db.execute(
                f"SELECT images.*, (SELECT COUNT(*) FROM instances WHERE image_id=images.id) "
                f"AS n_instances FROM images {clause} ORDER BY id LIMIT ? OFFSET ?",
                [*args, -1 if limit is None else int(limit), int(offset)],
            ).fetchall()
        return [dict(r) for r in rows], int(total)

    def get_image(self, image_id: int) -> dict[str, Any]:
        with self._read() as db:
            row = db.execute("SELECT * FROM images WHERE id=?", (image_id,)).fetchone()
        if row is None:
            raise NotFound(f"no image with id {image_id}")
        return dict(row)

    def image_by_name(self, file_name: str) -> dict[str, Any] | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM images WHERE file_name=?", (file_name,)).fetchone()
        return None if row is None else dict(row)

    def set_status(self, image_id: int, status: str) -> None:
        if status not in STATUSES:
            raise StoreError(f"status must be one of {STATUSES}, got {status!r}")
        with self._tx() as db:
            cur = db.execute("UPDATE images SET status=?, updated_at=? WHERE id=?",
                             (status, time.time(), image_id))
            if cur.rowcount == 0:
                raise NotFound(f"no image with id {image_id}")

    def neighbour(self, image_id: int, step: int) -> int | None:
        """The next (``step=1``) or previous (``-1``) image id, or None at the ends."""
        op, order = (">", "ASC") if step > 0 else ("<", "DESC")
        with self._read() as db:
            row = db.execute(f"SELECT id FROM images WHERE id {op} ? ORDER BY id {order} "
                             "LIMIT 1", (image_id,)).fetchone()
        return None if row is None else int(row["id"])

    # -- classes ---------------------------------------------------------------------------
    def add_class(self, name: str, color: str | None = None) -> int:
        """Add a class (or return the id of the existing one with this name)."""
        name = name.strip()
        if not name or len(name) > 200:
            raise StoreError("a class name must have 1-200 characters")
        with self._tx() as db:
            row = db.execute("SELECT id FROM classes WHERE name=?", (name,)).fetchone()
            if row:
                return int(row["id"])
            n = db.execute("SELECT COUNT(*) FROM classes").fetchone()[0]
            cur = db.execute("INSERT INTO classes (name, color) VALUES (?, ?)",
                             (name, color or PALETTE[n % len(PALETTE)]))
            return int(cur.lastrowid)

    def list_classes(self) -> list[dict[str, Any]]:
        with self._read() as db:
            return [dict(r) for r in db.execute("SELECT * FROM classes ORDER BY id")]

    def rename_class(self, class_id: int, name: str) -> None:
        name = name.strip()
        if not name:
            raise StoreError("a class name must not be empty")
        with self._tx() as db:
            try:
                cur = db.execute("UPDATE classes SET name=? WHERE id=?", (name, class_id))
            except sqlite3.IntegrityError:
                raise StoreError(f"a class named {name!r} exists already") from None
            if cur.rowcount == 0:
                raise NotFound(f"no class with id {class_id}")

    # -- instances -------------------------------------------------------------------------
    def add_instance(self, image_id: int, class_id: int, mask: np.ndarray,
                     score: float | None = None, source: str = "api") -> Instance:
        """Commit one instance from an ``(H, W)`` bool mask of the image's size."""
        image = self.get_image(image_id)
        rle, area, bbox = self._check_mask(image, mask)
        if source not in SOURCES:
            raise StoreError(f"source must be one of {SOURCES}, got {source!r}")
        now = time.time()
        with self._tx() as db:
            self._require_class(db, class_id)
            cur = db.execute(
                "INSERT INTO instances (image_id, class_id, rle, area, bbox_x, bbox_y, bbox_w, "
                "bbox_h, score, source, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (image_id, class_id, rle, area, *bbox, score, source, now, now),
            )
            if image["status"] == "todo":
                db.execute("UPDATE images SET status='in_progress', updated_at=? WHERE id=?",
                           (now, image_id))
            return self._instance(db, int(cur.lastrowid))

    def update_instance(self, instance_id: int, class_id: int | None = None,
                        mask: np.ndarray | None = None) -> Instance:
        """Change an instance's class and/or mask."""
        with self._tx() as db:
            inst = self._instance(db, instance_id)
            now = time.time()
            if class_id is not None:
                self._require_class(db, class_id)
                db.execute("UPDATE instances SET class_id=?, updated_at=? WHERE id=?",
                           (class_id, now, instance_id))
            if mask is not None:
                image = dict(db.execute("SELECT * FROM images WHERE id=?",
                                        (inst.image_id,)).fetchone())
                rle, area, bbox = self._check_mask(image, mask)
                db.execute("UPDATE instances SET rle=?, area=?, bbox_x=?, bbox_y=?, bbox_w=?, "
                           "bbox_h=?, updated_at=? WHERE id=?",
                           (rle, area, *bbox, now, instance_id))
            return self._instance(db, instance_id)

    def delete_instance(self, instance_id: int) -> Instance:
        """Delete an instance; returns what it was (so the UI can undo)."""
        with self._tx() as db:
            inst = self._instance(db, instance_id)
            db.execute("DELETE FROM instances WHERE id=?", (instance_id,))
            return inst

    def instances(self, image_id: int | None = None) -> list[Instance]:
        """Instances of one image, or of the whole project, by id."""
        with self._read() as db:
            if image_id is None:
                rows = db.execute("SELECT * FROM instances ORDER BY id").fetchall()
            else:
                rows = db.execute("SELECT * FROM instances WHERE image_id=? ORDER BY id",
                                  (image_id,)).fetchall()
        return [_row_instance(r) for r in rows]

    def get_instance(self, instance_id: int) -> Instance:
        with self._read() as db:
            return self._instance(db, instance_id)

    def counts(self) -> dict[str, int]:
        """Images per status, unreadable images and instances in the project."""
        with self._read() as db:
            out = {s: 0 for s in STATUSES}
            for row in db.execute("SELECT status, COUNT(*) AS n FROM images WHERE error IS NULL "
                                  "GROUP BY status"):
                out[row["status"]] = int(row["n"])
            out["error"] = int(db.execute(
                "SELECT COUNT(*) FROM images WHERE error IS NOT NULL").fetchone()[0])
            out["instances"] = int(db.execute("SELECT COUNT(*) FROM instances").fetchone()[0])
        return out

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _check_mask(image: dict[str, Any], mask: np.ndarray
                    ) -> tuple[str, int, tuple[int, int, int, int]]:
        mask = np.asarray(mask)
        if image["error"] is not None:
            raise StoreError(f"image {image['id']} could not be read: {image['error']}")
        if mask.shape != (image["height"], image["width"]):
            raise StoreError(f"mask shape {mask.shape} does not match image {image['id']} "
                             f"({image['height']}, {image['width']})")
        rle, area, bbox = mask_record(mask.astype(bool))
        if area == 0:
            raise StoreError("the mask is empty; nothing to save")
        return rle, area, bbox

    @staticmethod
    def _require_class(db: sqlite3.Connection, class_id: int) -> None:
        if db.execute("SELECT 1 FROM classes WHERE id=?", (class_id,)).fetchone() is None:
            raise NotFound(f"no class with id {class_id}")

    @staticmethod
    def _instance(db: sqlite3.Connection, instance_id: int) -> Instance:
        row = db.execute("SELECT * FROM instances WHERE id=?", (instance_id,)).fetchone()
        if row is None:
            raise NotFound(f"no instance with id {instance_id}")
        return _row_instance(row)


def _row_instance(r: sqlite3.Row) -> Instance:
    return Instance(int(r["id"]), int(r["image_id"]), int(r["class_id"]), r["rle"],
                    int(r["area"]), (r["bbox_x"], r["bbox_y"], r["bbox_w"], r["bbox_h"]),
                    r["score"], r["source"], r["created_at"], r["updated_at"])


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (no ';' inside our literals)."""
    lines = [line.split("--")[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
