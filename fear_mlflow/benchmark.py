"""Ground-truth tables: which arch a NATS-Bench index names, and how well it trains.

The index <-> arch mapping of NATS-Bench is not derivable from the arch, so every
index given by a user goes through a `Benchmark`. Two sources give one:

* a CSV or Parquet table with columns ``index, arch`` and one numeric column per
  dataset (test accuracy in percent after the benchmark's 200-epoch training, as in
  ``tss_test_accuracy_200ep.csv``); extra datasets such as ``digits`` are just more
  columns, and rows of archs outside the benchmark may leave ``index`` empty;
* the official NATS-Bench ``tss`` archive, read through the optional ``nats_bench``
  package: the ``NATS-tss-v1_0-3ffb9-simple`` directory (read lazily, one arch file at
  a time) or a ``NATS-tss-*.pickle.pbz2`` file. Both are pickles: only load archives
  you trust.

Tables are checked once on load, so a wrong file fails with one clear message instead
of a lookup failing later in the middle of a sweep.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Callable
from numbers import Integral
from typing import TYPE_CHECKING

import numpy as np

from fear_mlflow.errors import UserError
from fear_mlflow.space.arch import NUM_NODES, OPS, Arch, parse_arch

if TYPE_CHECKING:
    import pandas as pd

#: The datasets NATS-Bench reports; a table may hold any subset plus other datasets.
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "ImageNet16-120")
#: Environment variable naming the default benchmark (used when no path is given).
ENV_VAR = "FEAR_BENCHMARK"
#: NATS-Bench's training schedule whose test accuracy is the ground truth.
NATS_HP = "200"
NATS_META = "meta.pickle.pbz2"

_WANTED = (
    "a CSV/Parquet table with columns index, arch and one column per dataset "
    f"({', '.join(DATASETS)}, ...; test accuracy in percent), or a NATS-Bench tss archive "
    "(the NATS-tss-v1_0-3ffb9-simple directory or a NATS-tss-*.pickle.pbz2 file)"
)
_EXPECTED = "expected " + _WANTED
_COMPRESSED = (".gz", ".bz2", ".zip", ".xz", ".zst", ".tar")

_OP_RE = "(?:" + "|".join(re.escape(op) for op in OPS) + ")"
#: The canonical arch string, so a whole column is validated at C speed; rows that do
#: not match fall back to `parse_arch` (for its exact error, or to canonicalise).
_CANONICAL_RE = r"\+".join(
    r"\|" + r"\|".join(f"{_OP_RE}~{i}" for i in range(j)) + r"\|" for j in range(1, NUM_NODES)
)

Fetch = Callable[[int], dict[str, float | None]]


class Benchmark:
    """An index <-> arch mapping with per-dataset test accuracies (percent).

    Lookups are dicts built once; `Arch` objects are parsed only when asked for, so
    loading the 15,625-row table costs little more than reading the file.
    """

    def __init__(
        self,
        source: str,
        arch_strs: list[str],
        row_indices: list[int | None],
        columns: dict[str, np.ndarray],
        fetch: Fetch | None = None,
    ) -> None:
        """Internal: use `load_benchmark` or `Benchmark.from_frame`."""
        self.source = source
        self.datasets: tuple[str, ...] = tuple(columns)
        self._arch_strs = arch_strs
        self._row_indices = row_indices
        self._columns = columns
        self._str_to_row = {s: r for r, s in enumerate(arch_strs)}
        self._index_to_row = {i: r for r, i in enumerate(row_indices) if i is not None}
        self._max_index = max(self._index_to_row, default=-1)
        self._parsed: dict[int, Arch] = {}
        # Lazy sources (the NATS archive) fill `columns` one row at a time.
        self._fetch = fetch
        self._fetched = np.zeros(len(arch_strs), dtype=bool) if fetch else None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, source: str = "<table>") -> Benchmark:
        """Validate a table (columns index, arch, <datasets...>) and index it."""
        return _from_frame(frame, source)

    def __len__(self) -> int:
        return len(self._arch_strs)

    def __repr__(self) -> str:
        return f"Benchmark({self.source!r}, {len(self)} archs, datasets={list(self.datasets)})"

    def _row_of_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, Integral):
            raise UserError(f"an arch index must be an integer, got {index!r}")
        index = int(index)
        row = self._index_to_row.get(index)
        if row is not None:
            return row
        if not self._index_to_row:
            raise UserError(
                f"benchmark {self.source} lists no indices (its index column is empty), so "
                f"index {index} names no arch; give the arch string instead"
            )
        if not 0 <= index <= self._max_index:
            raise UserError(
                f"index {index} is out of range 0..{self._max_index} of benchmark {self.source}; "
                "give an index in that range or the arch string instead"
            )
        raise UserError(
            f"index {index} is not listed in benchmark {self.source} (it lists "
            f"{len(self._index_to_row)} indices within 0..{self._max_index}); use a table "
            "that covers it, e.g. the full NATS-Bench one, or give the arch string instead"
        )

    def arch(self, index: int) -> Arch:
        """The arch at a benchmark index; a `UserError` when the table does not list it."""
        row = self._row_of_index(index)
        arch = self._parsed.get(row)
        if arch is None:
            arch = self._parsed[row] = parse_arch(self._arch_strs[row])
        return arch

    def index(self, arch: Arch) -> int | None:
        """The benchmark index of ``arch``, or None when the table does not list it."""
        row = self._str_to_row.get(str(arch))
        return None if row is None else self._row_indices[row]

    def accuracy(self, arch_or_index: Arch | int, dataset: str) -> float | None:
        """Test accuracy in percent, or None when the arch or its value is unknown.

        An arch the table does not list is None (archs outside the benchmark are
        normal); an index it does not list, or a dataset it has no column for, is a
        `UserError` (a typo), which names the datasets it has.
        """
        if dataset not in self._columns:
            known = ", ".join(self.datasets) or "none"
            raise UserError(
                f"benchmark {self.source} has no accuracies for dataset {dataset!r}; "
                f"it has: {known}. Use one of those, or a table with a {dataset!r} column"
            )
        if isinstance(arch_or_index, Arch):
            row = self._str_to_row.get(str(arch_or_index))
            if row is None:
                return None
        else:
            row = self._row_of_index(arch_or_index)
        self._ensure(row)
        value = float(self._columns[dataset][row])
        return None if np.isnan(value) else value

    def indices(self) -> list[int]:
        """The benchmark indices the table lists, ascending."""
        return sorted(self._index_to_row)

    def to_frame(self) -> pd.DataFrame:
        """The table as a new DataFrame: columns index, arch, <datasets...>, in table order.

        ``index`` is int64, or nullable Int64 when some rows have none. For a NATS
        archive this reads every arch file once (minutes for the full space).
        """
        import pandas as pd

        for row in range(len(self)):
            self._ensure(row)
        if all(i is not None for i in self._row_indices):
            index = pd.Series(self._row_indices, dtype="int64")
        else:
            index = pd.Series(self._row_indices, dtype="Int64")
        data: dict[str, object] = {"index": index, "arch": pd.Series(self._arch_strs, dtype=object)}
        for name, values in self._columns.items():
            data[name] = pd.Series(values.copy(), dtype="float64")
        return pd.DataFrame(data)

    def _ensure(self, row: int) -> None:
        if self._fetched is None or self._fetched[row]:
            return
        assert self._fetch is not None
        values = self._fetch(row)
        for name, value in values.items():
            self._columns[name][row] = np.nan if value is None else value
        self._fetched[row] = True


# --------------------------------------------------------------------------- tables


def _fail(source: str, problem: str) -> UserError:
    return UserError(f"benchmark {source}: {problem}; {_EXPECTED}")


def _row_name(row: int, index: int | None) -> str:
    return f"index {index}" if index is not None else f"row {row + 1}"


def _from_frame(frame: pd.DataFrame, source: str) -> Benchmark:
    if "index" not in frame.columns and frame.index.name == "index":
        frame = frame.reset_index()  # a Parquet file written from an index-ed frame
    columns = [str(c) for c in frame.columns]
    missing = [c for c in ("index", "arch") if c not in columns]
    if missing:
        found = ", ".join(repr(c) for c in columns) or "none"
        raise _fail(source, f"missing column {' and '.join(missing)} (found columns {found})")
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise _fail(source, f"column {dup!r} appears twice")
    frame = frame.set_axis(columns, axis=1)
    datasets = [c for c in columns if c not in ("index", "arch")]
    if not datasets:
        raise _fail(source, "it has no accuracy column, only index and arch")
    if len(frame) == 0:
        raise _fail(source, "it has no rows")

    indices = _check_indices(frame["index"], source)
    arch_strs = _check_archs(frame["arch"], indices, source)
    table: dict[str, np.ndarray] = {}
    for name in datasets:
        table[name] = _check_accuracies(name, frame[name], indices, source)
    return Benchmark(source, arch_strs, indices, table)


def _check_indices(column: pd.Series, source: str) -> list[int | None]:
    import pandas as pd

    numbers = pd.to_numeric(column, errors="coerce").astype("float64")
    given = column.notna().to_numpy()
    values = numbers.to_numpy()
    bad = given & (np.isnan(values) | (values < 0) | (values != np.floor(values)))
    if bad.any():
        row = int(np.argmax(bad))
        raise _fail(
            source,
            f"column index must hold non-negative integers, row {row + 1} has {column.iloc[row]!r}",
        )
    indices: list[int | None] = [
        int(v) if ok else None for v, ok in zip(values, given, strict=True)
    ]
    seen: dict[int, int] = {}
    for row, index in enumerate(indices):
        if index is None:
            continue
        if index in seen:
            raise _fail(
                source,
                f"index {index} appears twice (rows {seen[index] + 1} and {row + 1}); "
                "every index must be unique",
            )
        seen[index] = row
    return indices


def _check_archs(column: pd.Series, indices: list[int | None], source: str) -> list[str]:
    texts = column.astype(object).astype(str)  # `Arch` objects become canonical strings
    ok = texts.str.fullmatch(_CANONICAL_RE).to_numpy(dtype=bool)
    arch_strs: list[str] = texts.to_list()
    for row in np.flatnonzero(~ok):
        value = column.iloc[row]
        where = _row_name(int(row), indices[row])
        if not isinstance(value, str) or not value.strip():
            raise _fail(source, f"{where} has no arch string (found {value!r})")
        try:
            arch_strs[row] = str(parse_arch(value))
        except UserError as err:
            raise _fail(source, f"the arch of {where} does not parse ({err})") from None
    seen: dict[str, int] = {}
    for row, text in enumerate(arch_strs):
        if text in seen:
            first = seen[text]
            raise _fail(
                source,
                f"arch {text} appears twice ({_row_name(first, indices[first])} and "
                f"{_row_name(row, indices[row])}); every arch must be listed once",
            )
        seen[text] = row
    return arch_strs


def _check_accuracies(
    name: str, column: pd.Series, indices: list[int | None], source: str
) -> np.ndarray:
    if name.startswith("Unnamed:"):
        raise _fail(
            source,
            f"column {name!r} has no name (a row index written by pandas?); remove it, "
            "e.g. write the table with to_csv(index=False)",
        )
    import pandas as pd
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    if not is_numeric_dtype(column.dtype) or is_bool_dtype(column.dtype):
        numbers = pd.to_numeric(column, errors="coerce")
        bad = (column.notna() & numbers.isna()).to_numpy()
        row = int(np.argmax(bad)) if bad.any() else 0
        raise _fail(
            source,
            f"column {name!r} is not numeric ({_row_name(row, indices[row])} has "
            f"{column.iloc[row]!r}); every column besides index and arch must hold one "
            "dataset's test accuracy in percent",
        )
    values = column.to_numpy(dtype="float64", na_value=np.nan)
    out = ~np.isnan(values) & ((values < 0) | (values > 100))
    if out.any():
        row = int(np.argmax(out))
        raise _fail(
            source,
            f"column {name!r} has {values[row]} at {_row_name(row, indices[row])}, but "
            "accuracies are percent in 0..100",
        )
    return values.copy()


def _read_table(path: str, source: str, kind: str) -> pd.DataFrame:
    import pandas as pd

    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        with warnings.catch_warnings():
            # index_col=False: a row longer than the header must not silently become a
            # row index; pandas warns about it, which we turn into the error below.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, skipinitialspace=True, index_col=False)
    except pd.errors.ParserWarning:
        raise _fail(source, "some rows have more fields than the header") from None
    except ImportError as err:
        raise UserError(
            f"benchmark {source}: reading Parquet needs pyarrow ({err}); install it with "
            "`pip install pyarrow`, or convert the table to CSV"
        ) from None
    except UnicodeDecodeError:
        raise _fail(source, "the file is not UTF-8 text (a binary file?)") from None
    except pd.errors.EmptyDataError:
        raise _fail(source, "the file is empty") from None
    except (pd.errors.ParserError, ValueError, OSError) as err:
        what = "Parquet" if kind == "parquet" else "CSV"
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _fail(source, f"it does not read as {what} ({detail})") from None


# ----------------------------------------------------------------- NATS-Bench archive


def _import_nats(source: str):
    try:
        import nats_bench
    except ImportError:
        raise UserError(
            f"benchmark {source} is a NATS-Bench archive, which needs the nats_bench package: "
            "pip install 'fear-mlflow[natsbench]' (or export it to CSV where it is installed)"
        ) from None
    return nats_bench


def _load_nats(path: str, source: str) -> Benchmark:
    """Open a tss archive; accuracies are read per arch on first use.

    Ground truth = ``get_more_info(i, dataset, hp='200', is_random=False)['test-accuracy']``,
    i.e. the mean over seeds of the 200-epoch test accuracy. For ``cifar10`` that is the
    net trained on train+valid, tested on the CIFAR-10 test set (``ori-test``) — not
    ``cifar10-valid``, which is trained on half the data; for ``cifar100`` and
    ``ImageNet16-120`` it is the ``x-test`` half. These reproduce the public tables
    (best CIFAR-10 cell 94.37 %, best CIFAR-100 73.51 %, best ImageNet16-120 47.31 %).
    """
    nats_bench = _import_nats(source)
    fast = os.path.isdir(path)
    try:
        api = nats_bench.create(path, "tss", fast_mode=fast, verbose=False)
        arch_strs = [str(a) for a in api.meta_archs]
    except UserError:
        raise
    except Exception as err:  # a pickle can fail in any way
        raise _fail(source, f"nats_bench could not open it ({type(err).__name__}: {err})") from None
    if not arch_strs:
        raise _fail(source, "the archive lists no architectures")
    bad = [s for s in arch_strs if not re.fullmatch(_CANONICAL_RE, s)]
    if bad:
        raise _fail(
            source,
            f"the archive's archs are not topology cells (e.g. {bad[0]!r}; the size-space "
            "'sss' archive?)",
        )
    if len(set(arch_strs)) != len(arch_strs):
        raise _fail(source, "the archive lists an arch twice")

    def fetch(row: int) -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        try:
            for dataset in DATASETS:
                try:
                    info = api.get_more_info(row, dataset, hp=NATS_HP, is_random=False)
                except KeyError:
                    hps = api.arch2infos_dict.get(row, {})
                    if NATS_HP not in hps:
                        raise UserError(
                            f"benchmark {source}: arch {row} has no {NATS_HP}-epoch results "
                            f"(found {sorted(hps)}); use the official NATS-tss-v1_0-3ffb9 "
                            "archive, whose ground truth is the 200-epoch training"
                        ) from None
                    values[dataset] = None  # this arch was not trained on that dataset
                    continue
                acc = info.get("test-accuracy")
                values[dataset] = None if acc is None else float(acc)
        except UserError:
            raise
        except Exception as err:  # missing or corrupt per-arch file
            raise UserError(
                f"benchmark {source}: could not read arch {row} from the archive "
                f"({type(err).__name__}: {err}); the archive looks incomplete or damaged, "
                "download NATS-tss-v1_0-3ffb9-simple again"
            ) from None
        if api.fast_mode:  # drop the per-epoch curves; we keep only the numbers above
            api.arch2infos_dict.pop(row, None)
            api.evaluated_indexes.discard(row)
        return values

    columns = {d: np.full(len(arch_strs), np.nan) for d in DATASETS}
    return Benchmark(source, arch_strs, list(range(len(arch_strs))), columns, fetch)


# ------------------------------------------------------------------------- loading

_CACHE: dict[str, tuple[tuple[int, int], Benchmark]] = {}


def _stamp(path: str) -> tuple[int, int]:
    target = os.path.join(path, NATS_META) if os.path.isdir(path) else path
    try:
        st = os.stat(target)
    except OSError:
        st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def _nats_subdir_hint(path: str) -> str:
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return ""
    for name in names:
        if os.path.isfile(os.path.join(path, name, NATS_META)):
            return f" (did you mean {os.path.join(path, name)}?)"
    return ""


def _load_path(path: str, source: str) -> Benchmark:
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, NATS_META)):
            raise _fail(
                source,
                f"it is a directory without {NATS_META}, so not a NATS-Bench archive"
                + _nats_subdir_hint(path),
            )
        return _load_nats(path, source)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8192)
    except OSError as err:
        raise UserError(
            f"benchmark {source}: cannot read it ({err.strerror}); check the file's permissions"
        ) from None
    name = path.lower()
    if head.startswith(b"PAR1") or name.endswith((".parquet", ".pq")):
        kind = "parquet"
    elif name.endswith(".pbz2") or (head.startswith(b"BZh") and not name.endswith(_COMPRESSED)):
        return _load_nats(path, source)
    elif not name.endswith(_COMPRESSED) and b"\x00" in head:
        raise _fail(source, "it is a binary file, not a CSV table")
    else:
        kind = "csv"
    return _from_frame(_read_table(path, source, kind), source)


def load_benchmark(path: str | os.PathLike[str] | None = None) -> Benchmark | None:
    """Load ``path``, else ``$FEAR_BENCHMARK``, else return None (no benchmark).

    Cached per (resolved path, modification time, size), so every caller in one process
    shares one table and a rewritten file is read again.
    """
    origin = ""
    if path is None:
        path = os.environ.get(ENV_VAR) or None
        origin = f" (from {ENV_VAR})"
        if path is None:
            return None
    source = os.fspath(path)
    expanded = os.path.expanduser(source)
    if not os.path.exists(expanded):
        raise UserError(
            f"benchmark {source}{origin}: no such file or directory; pass --benchmark PATH or "
            f"set {ENV_VAR} to {_WANTED}"
        )
    resolved = os.path.realpath(expanded)
    stamp = _stamp(resolved)
    cached = _CACHE.get(resolved)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    bench = _load_path(resolved, source + origin)
    bench.source = source
    _CACHE[resolved] = (stamp, bench)
    return bench


# ------------------------------------------------------------------------- helpers

_INT_RE = re.compile(r"[+-]?\d+")


def resolve_arch(spec: str | int | Arch, benchmark: Benchmark | None) -> tuple[Arch, int | None]:
    """Turn a user's arch spec (benchmark index or arch string) into (Arch, index or None).

    An index needs a benchmark to name its arch; a string needs none, and its index is
    looked up when a benchmark is given (None when the table does not list it).
    """
    if isinstance(spec, Arch):
        return spec, benchmark.index(spec) if benchmark is not None else None
    if isinstance(spec, bool):
        raise UserError(f"an arch must be an index or an arch string, got {spec!r}")
    if isinstance(spec, Integral):
        number: int | None = int(spec)
    elif isinstance(spec, str) and _INT_RE.fullmatch(spec.strip()):
        number = int(spec.strip())
    elif isinstance(spec, str):
        arch = parse_arch(spec)
        return arch, benchmark.index(arch) if benchmark is not None else None
    else:
        raise UserError(f"an arch must be an index or an arch string, got {spec!r}")
    if number < 0:
        raise UserError(f"arch index {number} is negative; NATS-Bench indices start at 0")
    if benchmark is None:
        raise UserError(
            f"arch index {number} needs a benchmark table to name its arch: pass --benchmark "
            f"PATH or set {ENV_VAR} (e.g. to a NATS-Bench CSV or archive), or give the arch "
            "string instead"
        )
    return benchmark.arch(number), number


def write_benchmark_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write a table (columns index, arch, <datasets...>) that `load_benchmark` reads back.

    The frame is validated first, so a bad table never reaches disk; the file is
    replaced atomically, so a reader never sees half of it.
    """
    target = os.path.expanduser(os.fspath(path))
    out = Benchmark.from_frame(frame, source=os.fspath(path)).to_frame()
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".benchmark-", suffix=".csv", dir=folder)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            out.to_csv(fh, index=False)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
