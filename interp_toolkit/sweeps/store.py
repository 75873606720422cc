"""The parquet store of a sweep: one directory, one row per work item.

Layout::

    OUT/sweep.json                 schema version, analysis, config (written once)
    OUT/rows/<key>.parquet         one row per finished item, written atomically
    OUT/rows/compact-<h>.parquet   many rows, after ``compact()``
    OUT/artefacts/<key>/<name>     optional large artefacts of an item

Every shard carries the schema version in its parquet metadata. A row is written the moment
its item finishes (temporary file + rename), so a killed run loses only the items in flight
and a half-written file is never read. Rows are keyed by the item key (``items.item_key``);
the reader keeps one row per key (from the shard whose name sorts first), so an item stored
twice — a retry after a worker died, or a crash during ``compact`` — appears once.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..core import atomic_write_bytes, atomic_write_text, dumps
from .items import canonical

SCHEMA_VERSION = 1
MANIFEST = "sweep.json"
_META_KEY = b"interp_toolkit.sweep_schema"

# Columns every row has (the analysis adds its own).
ID_COLUMNS = ("key", "analysis", "input_id", "index", "text", "model", "config", "seed", "model_meta",
              "versions", "error", "seconds", "host")
# Columns that legitimately differ between two runs of the same item.
RUN_COLUMNS = ("seconds", "host", "versions")


class StoreError(ValueError):
    """A results directory that this sweep cannot use (another schema version, another
    analysis or config, not a sweep store)."""


def _shard_bytes(rows) -> bytes:
    """Parquet bytes of rows (a list of dicts or a pyarrow table), schema version in the metadata."""
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows)
    meta = dict(table.schema.metadata or {})
    meta[_META_KEY] = str(SCHEMA_VERSION).encode()
    table = table.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


class SweepStore:
    """Rows of one sweep under ``root`` (see the module docstring)."""

    def __init__(self, root):
        self.root = Path(root)
        self.rows_dir = self.root / "rows"
        self.artefacts_dir = self.root / "artefacts"

    # ------------------------------------------------------------------ manifest
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> dict | None:
        """The manifest, or None for a directory that holds no sweep yet. StoreError for a
        directory written by another schema version or holding something else."""
        if not self.manifest_path.exists():
            if self.root.exists() and any(self.root.iterdir()):
                raise StoreError(f"{self.root} exists and is not a sweep store (no {MANIFEST}); "
                                 "use an empty or new directory (old s-Trace runs: `interp-toolkit sweep migrate`)")
            return None
        try:
            m = json.loads(self.manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise StoreError(f"{self.manifest_path} is not valid JSON: {exc}") from None
        if m.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{self.root} was written with sweep schema version {m.get('schema_version')}; "
                             f"this toolkit reads version {SCHEMA_VERSION} — use another directory")
        return m

    def check(self, analysis: str, config: dict) -> dict | None:
        """Read-only: raise StoreError unless this store is empty or holds the same analysis
        and config. Returns the manifest (None when new)."""
        m = self.manifest()
        if m is None:
            return None
        if m["analysis"] != analysis:
            raise StoreError(f"{self.root} holds a {m['analysis']!r} sweep, not {analysis!r}; use another directory")
        if canonical(m["config"]) != canonical(config):
            old, new = m["config"], json.loads(canonical(config))
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise StoreError(f"{self.root} holds a sweep with another configuration ({', '.join(diff)} differ); "
                             "use another directory")
        return m

    def create(self, analysis: str, config: dict) -> None:
        """Check, then write the manifest if the store is new."""
        if self.check(analysis, config) is None:
            self.rows_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.manifest_path, dumps({
                "schema_version": SCHEMA_VERSION, "analysis": analysis, "config": json.loads(canonical(config)),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
        self.rows_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ writing
    def write_row(self, row: dict, artefacts: dict[str, bytes] | None = None) -> Path:
        """One finished item: its artefacts first, then its row (the row marks it done)."""
        key = row["key"]
        for name, data in (artefacts or {}).items():
            if "/" in name or name.startswith("."):
                raise ValueError(f"artefact name {name!r} must be a plain file name")
            atomic_write_bytes(self.artefacts_dir / key / name, data)
        return atomic_write_bytes(self.rows_dir / f"{key}.parquet", _shard_bytes([row]))

    def compact(self) -> Path | None:
        """Merge the one-row shards into one shard (then delete them). A crash in between
        leaves rows twice, which the reader deduplicates."""
        singles = sorted(p for p in self.rows_dir.glob("*.parquet") if not p.name.startswith("compact-"))
        if not singles:
            return None
        table = self._read_arrow(singles)
        keys = table.column("key").to_pylist()
        h = hashlib.sha1("".join(sorted(keys)).encode()).hexdigest()[:12]
        out = atomic_write_bytes(self.rows_dir / f"compact-{h}.parquet", _shard_bytes(table.drop_columns(["_shard"])))
        for p in singles:
            p.unlink()
        return out

    def clear(self) -> None:
        """Delete this store's rows, artefacts and manifest (only files it wrote; a directory
        of another schema version or another kind is refused, untouched)."""
        import shutil

        if self.manifest() is None:
            return
        for p in self.shards():
            p.unlink()
        shutil.rmtree(self.artefacts_dir, ignore_errors=True)
        if self.rows_dir.exists() and not any(self.rows_dir.iterdir()):
            self.rows_dir.rmdir()
        self.manifest_path.unlink()

    # ------------------------------------------------------------------ reading
    def shards(self) -> list[Path]:
        return sorted(self.rows_dir.glob("*.parquet")) if self.rows_dir.exists() else []

    def done_keys(self) -> set[str]:
        """Keys of the items whose rows exist (reads only the key column of compacted shards)."""
        keys = set()
        for p in self.shards():
            if p.name.startswith("compact-"):
                keys.update(pq.read_table(p, columns=["key"]).column("key").to_pylist())
            else:
                keys.add(p.stem)
        return keys

    def _read_arrow(self, shards) -> pa.Table:
        """All rows of ``shards`` (schemas unified: a column missing or null in one shard is
        null there), with the shard name in ``_shard``."""
        tables = []
        for p in shards:
            t = pq.read_table(p)
            meta = (t.schema.metadata or {}).get(_META_KEY)
            v = int(meta) if meta is not None else None
            if v != SCHEMA_VERSION:
                raise StoreError(f"{p} has sweep schema version {v}, expected {SCHEMA_VERSION}")
            tables.append(t.replace_schema_metadata(None).append_column("_shard", pa.array([p.name] * len(t))))
        return pa.concat_tables(tables, promote_options="permissive")

    def _read(self, shards) -> pd.DataFrame:
        """One row per key: of two rows with one key, the one from the shard whose name sorts first."""
        if not shards:
            return pd.DataFrame(columns=list(ID_COLUMNS))
        df = self._read_arrow(shards).to_pandas()
        df = df.sort_values(["key", "_shard"], kind="stable").drop_duplicates("key", keep="first")
        return df.drop(columns="_shard")

    def table(self, model: str | None = None) -> pd.DataFrame:
        """One pandas table over every shard: one row per item key, ordered by (model, index)."""
        if self.manifest() is None:
            raise StoreError(f"{self.root} holds no sweep")
        df = self._read(self.shards())
        if model is not None:
            df = df[df["model"] == model]
        return df.sort_values(["model", "index"], kind="stable").reset_index(drop=True)

    def artefact(self, key: str, name: str) -> bytes:
        return (self.artefacts_dir / key / name).read_bytes()
