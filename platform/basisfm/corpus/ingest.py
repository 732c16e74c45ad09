"""The ingest: every table of a source -> normalised Parquet shard + manifest record, minus suite look-alikes.

Safe to interrupt and re-run. Shards are written to a temporary name and renamed, and are named by a
readable prefix of the table id, the SHA-256 of the whole id and the content fingerprint, so two tables
never share a shard. The manifest is rewritten atomically every few seconds as tables finish, and once
more at the end. `ingest_state.json` remembers each ingested table's source version stamp, each shard's
table id, byte size and SHA-256, and the settings it was normalised under (config, suites, and the
normalisation code itself); a re-run reuses a record without even loading its table when the stamp and
settings are unchanged and the shard on disk still has its recorded size and digest (a damaged or
replaced shard is re-ingested), so resuming or repeating a full ingest takes seconds.
Loading and normalising fan out to worker processes; results are consumed in listing order, so the
manifest order does not depend on timing. However the ingest stops (Ctrl-C, SIGTERM, a killed worker), the
tables finished so far are saved first, so a rerun resumes from them; no worker outlives it or prints a traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from basisfm.progress import progress_bar

from basisfm.config import CorpusConfig
from basisfm.corpus.holdout import HoldoutIndex, HoldoutMatch, table_signature
from basisfm.corpus.manifest import MANIFEST_NAME, REPORT_NAME, SHARDS_DIR, TableRecord, atomic_write_text
from basisfm.corpus.normalize import normalise_table
from basisfm.corpus.sources import RawTable, TableRef, TableSource, make_source
from basisfm.corpus.suite import load_suite
from basisfm.errors import TableError, WorkerLostError

MANIFEST_FLUSH_SECONDS = 5.0
STATE_NAME = "ingest_state.json"


@dataclass
class TableOutcome:
    """What happened to one table; exactly one of record / skipped_reason / excluded is set."""

    id: str
    record: TableRecord | None = None
    reused: bool = False  # an earlier run already wrote its shard (and, when unchanged, its record)
    shard_digest: dict | None = None  # {"id", "size", "sha256"} of the record's shard file
    skipped_reason: str | None = None
    excluded: HoldoutMatch | None = None


@dataclass
class IngestReport:
    out_dir: str
    source: str
    tables: int = 0
    rows: int = 0
    cells: int = 0
    kinds: dict[str, int] = field(default_factory=dict)  # columns per kind
    reused: int = 0
    excluded: list[dict] = field(default_factory=list)  # {id, duplicate_of, score, reason}
    skipped: list[dict] = field(default_factory=list)  # {id, reason}
    treated: list[dict] = field(default_factory=list)  # {id, treatments}: tables ingested with changes
    identical: list[list[str]] = field(default_factory=list)  # ingested tables with equal content (kept, listed)
    suites: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items())) or "none"
        lines = [
            f"corpus: {self.out_dir}  (source {self.source}, {self.wall_seconds:.1f} s)",
            f"  ingested   {self.tables} tables ({self.reused} unchanged from an earlier run), "
            f"{self.rows:,} rows, {self.cells:,} cells",
            f"  columns    {kinds}",
            f"  excluded   {len(self.excluded)} as copies of suite tables ({', '.join(self.suites) or 'no suites'})",
        ]
        # Look-alikes first: they are what a reader cannot guess from the suite file.
        shown = sorted(self.excluded, key=lambda e: e["id"] == e["duplicate_of"])
        for item in shown[:10]:
            lines.append(f"     {item['id']}  ~  {item['duplicate_of']}  ({item['reason']})")
        if len(self.excluded) > 10:
            lines.append(f"     ... {len(self.excluded) - 10} more in {REPORT_NAME}")
        reasons = Counter(_reason_class(s["reason"]) for s in self.skipped)
        if self.identical:
            lines.append(f"  identical  {sum(len(g) for g in self.identical)} tables in {len(self.identical)} groups of equal content "
                         f"(all kept; see 'identical' in {REPORT_NAME})")
        lines.append(f"  skipped    {len(self.skipped)}" + (": " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()) if reasons else ""))
        lines.append(f"  report     {Path(self.out_dir) / REPORT_NAME}")
        return "\n".join(lines)


def _reason_class(reason: str) -> str:
    return reason.split(";")[0].split(":")[0].strip()[:60]


def ingest(config: CorpusConfig, progress: bool = True) -> IngestReport:
    """Ingest `config.source` into `config.out_dir` and return (and write) the report."""
    started = time.monotonic()
    out = Path(config.out_dir)
    shards = out / SHARDS_DIR
    shards.mkdir(parents=True, exist_ok=True)
    for leftover in shards.glob(".*.tmp"):  # half-written shards of an interrupted run
        leftover.unlink(missing_ok=True)

    source = make_source(config)
    refs = source.refs()
    suites = [load_suite(path) for path in config.exclude_suites]
    holdout = HoldoutIndex.from_suites(suites, config) if suites else None
    previous = _read_manifest_lines(out)  # id -> (record, its JSON line) from an earlier run
    settings = _settings_key(config, holdout)
    versions = {ref.id: source.version(ref) for ref in refs}
    earlier_state = _read_state(out)
    # Stamps of an earlier run only count when it ran under the same settings.
    earlier_versions = earlier_state["tables"] if earlier_state["settings"] == settings else {}
    earlier_shards = earlier_state["shards"]  # a shard's digest holds whatever the settings: it is the file's
    unchanged = _unchanged_records(out, earlier_versions, versions, previous, earlier_shards)

    report = IngestReport(out_dir=str(out), source=config.source, suites=[s.name for s in suites])
    records: list[TableRecord] = []
    shard_digests: dict[str, dict] = {}  # shard -> {"id", "size", "sha256"} of this run's records
    lines: list[str] = []  # each record serialised once: rewriting the manifest stays cheap
    kinds: Counter[str] = Counter()
    last_flush = time.monotonic()

    def save_progress() -> None:
        # Keep earlier runs' records for tables not reached yet, so an interrupt loses nothing.
        done = {r.id for r in records}
        pending = [i for i, (r, _) in previous.items() if i not in done and (out / r.shard).exists()]
        atomic_write_text(out / MANIFEST_NAME, "".join(lines + [previous[i][1] for i in pending]))
        kept = (previous[i][0].shard for i in pending)
        digests = {shard: earlier_shards[shard] for shard in kept if shard in earlier_shards} | shard_digests
        _write_state(out, settings, versions, [r.id for r in records], earlier_versions, pending, digests)

    restore_sigterm = _sigterm_as_interrupt()
    bar = progress_bar(total=len(refs), desc=f"ingest {config.source}", unit="table", disable=not progress)
    try:  # the bar is closed before anything else is printed, Ctrl-C included
        for outcome in _outcomes(source, refs, config, holdout, unchanged, earlier_shards):
            bar.update(1)
            if outcome.record is not None:
                record = outcome.record
                shard_digests[record.shard] = outcome.shard_digest or earlier_shards[record.shard]
                records.append(record)
                lines.append(record.to_json() + "\n")
                report.tables += 1
                report.reused += outcome.reused
                report.rows += record.n_rows
                report.cells += record.n_cells
                kinds.update(c.kind for c in record.columns)
                if record.treatments or any(c.treatment for c in record.columns):
                    notes = list(record.treatments) + [f"{c.name}: {c.treatment}" for c in record.columns if c.treatment]
                    report.treated.append({"id": record.id, "treatments": notes})
            elif outcome.excluded is not None:
                report.excluded.append(outcome.excluded.to_dict())
            else:
                report.skipped.append({"id": outcome.id, "reason": outcome.skipped_reason})
            bar.set_postfix(ingested=report.tables, excluded=len(report.excluded), skipped=len(report.skipped), refresh=False)
            if time.monotonic() - last_flush > MANIFEST_FLUSH_SECONDS:
                save_progress()
                last_flush = time.monotonic()
            if config.max_tables is not None and report.tables >= config.max_tables:
                break
    except (KeyboardInterrupt, WorkerLostError):
        # Saved before the error surfaces, also when it comes before the first periodic save: the job's
        # "tables already ingested are kept" is then true, and the rerun reuses them.
        save_progress()
        raise
    finally:
        bar.close()
        restore_sigterm()

    atomic_write_text(out / MANIFEST_NAME, "".join(lines))
    _write_state(out, settings, versions, [r.id for r in records], {}, [], shard_digests)
    _remove_unreferenced_shards(out, records)
    by_content: dict[str, list[str]] = {}
    for record in records:
        by_content.setdefault(record.fingerprint, []).append(record.id)
    report.identical = [ids for ids in by_content.values() if len(ids) > 1]
    report.kinds = dict(sorted(kinds.items()))
    report.wall_seconds = round(time.monotonic() - started, 2)
    atomic_write_text(out / REPORT_NAME, report.to_json() + "\n")
    return report


def _outcomes(source: TableSource, refs: list[TableRef], config: CorpusConfig, holdout: HoldoutIndex | None,
              unchanged: dict[str, TableRecord], earlier_shards: dict[str, dict]):
    """One outcome per ref, in listing order: unchanged tables straight from the earlier run, the rest
    processed here or, when there is enough work, in worker processes."""
    todo = [ref for ref in refs if ref.id not in unchanged]
    workers = _worker_count(config, len(todo))
    if workers <= 1:
        _init_worker(source, config, holdout, earlier_shards)
        processed = map(_process, todo)
        yield from _in_listing_order(refs, unchanged, processed)
        return
    # spawn, not fork: the parent may hold Ray or torch threads, which fork does not copy safely. An executor,
    # not multiprocessing.Pool: a Pool replaces a killed worker but never answers the table it held, and its
    # locks may die held by it, so waiting or even terminating can hang; the executor notices the death at once
    # (BrokenProcessPool) and tears down without those locks. No max_tasks_per_child: on Python 3.11 an executor
    # that retires a worker after its quota does not always start the replacement, and the ingest then waits for
    # ever with no worker left (seen in `make demo`: 2 workers, stuck after ~400 tables).
    context = multiprocessing.get_context("spawn")
    # The executor's processes are the children born after this (others of the caller's are left alone).
    workers_seen: dict[int, multiprocessing.Process | None] = {p.pid: None for p in multiprocessing.active_children()}
    with _sigint_ignored_while_spawning(), _quiet_resource_tracker():
        executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_pool_worker,
                                       initargs=(source, config, holdout, earlier_shards))
        futures = [executor.submit(_process, ref) for ref in todo]  # the workers start with the first ones
    try:
        _note_workers(workers_seen)
        yield from _in_listing_order(refs, unchanged, _results_in_order(futures, workers_seen))
    finally:
        _stop_workers(executor, futures, workers_seen)


def _results_in_order(futures: list[Future], workers_seen: dict[int, multiprocessing.Process | None]):
    for future in futures:
        try:
            result = future.result()
        except BrokenProcessPool:
            raise WorkerLostError(
                f"{_lost_worker(workers_seen)} while tables were being ingested (the system ends processes that run "
                "out of memory); the tables finished so far are saved: rerun to resume, and if it happens again set "
                "corpus.workers=1 to see which table it is, or lower corpus.max_rows_per_table") from None
        _note_workers(workers_seen)
        yield result


def _note_workers(seen: dict[int, multiprocessing.Process | None]) -> None:
    """Hold on to the worker processes (children not in `seen` yet; pids already there map to None), so that
    their exit codes can still be read after the executor has joined (and so forgotten) them."""
    for child in multiprocessing.active_children():
        seen.setdefault(child.pid, child)


def _workers(seen: dict[int, multiprocessing.Process | None]) -> list[multiprocessing.Process]:
    return [p for p in seen.values() if p is not None]


def _lost_worker(seen: dict[int, multiprocessing.Process | None]) -> str:
    """"ingest worker process <pid> was ended by SIGKILL" for the worker that died first, as far as can be told:
    the executor ends the others with SIGTERM after one dies, so a death by another signal is the cause."""
    deadline = time.monotonic() + 2.0
    while True:  # the executor's thread may be reaping the dead worker this very moment: its code comes soon
        ended = [(p.pid, p.exitcode) for p in _workers(seen) if p.exitcode not in (None, 0)]
        if ended or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    ended.sort(key=lambda item: item[1] == -signal.SIGTERM)
    if not ended:
        return "an ingest worker process ended abruptly"
    pid, exitcode = ended[0]
    return f"ingest worker process {pid} was ended by {_exit_description(exitcode)}"


def _stop_workers(executor: ProcessPoolExecutor, futures: list[Future],
                  seen: dict[int, multiprocessing.Process | None]) -> None:
    """End the executor: at once when the ingest stops early (Ctrl-C, SIGTERM, max_tables, a lost worker),
    without waiting for the tables the workers hold; politely when every table is done."""
    if all(future.done() for future in futures):
        executor.shutdown(wait=True)
        return
    executor.shutdown(wait=False, cancel_futures=True)
    _note_workers(seen)
    for worker in _workers(seen):
        if worker.exitcode is None:
            worker.terminate()  # SIGTERM: workers keep its default action, so they end without a word
    for worker in _workers(seen):
        worker.join(timeout=10)


def _exit_description(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def _sigterm_as_interrupt():
    """Make SIGTERM (`kill`, a scheduler stopping the job) end the ingest as Ctrl-C does: progress saved,
    workers ended, one line from the job. Returns the function that puts the previous handler back.
    Only where the default still stands (a caller's own handler wins) and only on the main thread."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def _quiet_resource_tracker():
    """Start multiprocessing's resource tracker (it starts with the pool's first lock) without its leaked-
    semaphore warning. When the ingest is killed with SIGKILL, which nothing can catch, the tracker removes
    the pool's semaphores as it should, then warns about them: a message about internals, after the shell has
    already said "Killed". The tracker takes its warning filters from `sys.warnoptions` when it starts."""
    option = "ignore:resource_tracker:UserWarning"
    added = option not in sys.warnoptions
    if added:
        sys.warnoptions.append(option)
    try:
        yield
    finally:
        if added and option in sys.warnoptions:
            sys.warnoptions.remove(option)


@contextlib.contextmanager
def _sigint_ignored_while_spawning():
    """Workers start with Ctrl-C ignored: a spawned interpreter inherits an ignored SIGINT, so one still
    importing when Ctrl-C arrives (before its initializer runs) prints no KeyboardInterrupt traceback.
    The parent's own handler is back as soon as the pool has started."""
    if threading.current_thread() is not threading.main_thread():  # signal.signal works only there
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _in_listing_order(refs: list[TableRef], unchanged: dict[str, TableRecord], processed):
    for ref in refs:
        if ref.id in unchanged:
            yield TableOutcome(ref.id, record=unchanged[ref.id], reused=True)
        else:
            yield next(processed)


def _settings_key(config: CorpusConfig, holdout: HoldoutIndex | None) -> str:
    """Everything besides a table's own content that decides its record: normalisation settings, the
    suites it is checked against, and the code that reads, normalises and matches."""
    from basisfm.corpus import holdout as holdout_module, normalize as normalize_module, sources as sources_module

    digest = hashlib.sha256()
    settings = {
        "max_rows_per_table": config.max_rows_per_table, "max_columns": config.max_columns,
        "max_text_chars": config.max_text_chars, "seed": config.seed,
        "near_duplicate_threshold": config.near_duplicate_threshold,
        "suites": sorted(s.fingerprint for s in holdout.signatures) if holdout is not None else [],
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    # The readers count: a file read differently (an encoding, decimal commas) gives a different record.
    for module in (sources_module, normalize_module, holdout_module):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def _read_state(out: Path) -> dict:
    try:
        state = json.loads((out / STATE_NAME).read_text())
        if isinstance(state.get("tables"), dict):
            shards = state.get("shards")
            state["shards"] = {k: v for k, v in shards.items() if _is_digest(v)} if isinstance(shards, dict) else {}
            return state
    except (OSError, ValueError, AttributeError):
        pass
    return {"settings": None, "tables": {}, "shards": {}}


def _is_digest(value) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("id"), str) and isinstance(value.get("sha256"), str)
            and isinstance(value.get("size"), int))


def _write_state(out: Path, settings: str, versions: dict[str, str | None], ids: list[str],
                 earlier: dict[str, str], pending: list[str], shards: dict[str, dict]) -> None:
    tables = {i: versions[i] for i in ids if versions.get(i) is not None}
    tables.update({i: earlier[i] for i in pending if i in earlier})  # not reached yet: keep what the last run knew
    atomic_write_text(out / STATE_NAME, json.dumps({"settings": settings, "tables": tables, "shards": shards}, sort_keys=True))


def _unchanged_records(out: Path, earlier_versions: dict[str, str], versions: dict[str, str | None],
                       previous: dict[str, tuple[TableRecord, str]], shards: dict[str, dict]) -> dict[str, TableRecord]:
    """Records of the earlier run whose source version stamp is unchanged and whose shard is the file that
    run wrote for that table (same size and SHA-256); anything else is ingested again."""
    unchanged = {}
    for table_id, (record, _) in previous.items():
        stamp = versions.get(table_id)
        if stamp is not None and earlier_versions.get(table_id) == stamp and \
                _shard_is_intact(out / record.shard, table_id, shards.get(record.shard)):
            unchanged[table_id] = record
    return unchanged


def _shard_is_intact(path: Path, table_id: str, digest: dict | None) -> bool:
    """Whether `path` is the shard an earlier run wrote for `table_id`: its recorded size, then its SHA-256."""
    if digest is None or digest["id"] != table_id:
        return False
    try:
        if path.stat().st_size != digest["size"]:
            return False
        return _file_sha256(path) == digest["sha256"]
    except OSError:
        return False


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _worker_count(config: CorpusConfig, n_refs: int) -> int:
    if config.workers > 0:
        wanted = config.workers
    else:
        wanted = min(os.cpu_count() or 1, 8)
    # Below a few dozen tables the seconds it takes to start worker processes are not won back.
    return 1 if n_refs < 24 else min(wanted, n_refs)


_WORKER: dict = {}


def _init_worker(source: TableSource, config: CorpusConfig, holdout: HoldoutIndex | None,
                 earlier_shards: dict[str, dict] | None = None) -> None:
    _WORKER.update(source=source, config=config, holdout=holdout, out=Path(config.out_dir), shards=earlier_shards or {})


def _init_pool_worker(*args) -> None:
    # Ctrl-C reaches every process of the terminal's group; the parent alone handles it (and ends the pool),
    # so workers do not each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent()
    _init_worker(*args)


def _end_with_parent() -> None:
    """End this worker the moment its parent dies (Linux). A parent killed with SIGKILL cannot end its
    pool; its workers would finish their tables and each print two BrokenPipeError tracebacks trying to
    send them back to no one."""
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):  # not a worker process (a test calling this)
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent.pid:  # it died before the line above
        os._exit(0)


def _process(ref: TableRef) -> TableOutcome:
    source: TableSource = _WORKER["source"]
    config: CorpusConfig = _WORKER["config"]
    holdout: HoldoutIndex | None = _WORKER["holdout"]
    out: Path = _WORKER["out"]
    try:
        loaded = source.load(ref)
        if not isinstance(loaded, RawTable):
            return TableOutcome(ref.id, skipped_reason=loaded.reason)
        normalised = normalise_table(loaded.frame, ref.id, config, seed=config.seed)
        if holdout is not None:
            match = holdout.match(table_signature(ref.id, normalised.columns, normalised.fingerprint))
            if match is not None:
                return TableOutcome(ref.id, excluded=match)
        shard = f"{SHARDS_DIR}/{shard_name(ref.id, normalised.fingerprint)}"
        known = _WORKER["shards"].get(shard)
        reused = _shard_is_intact(out / shard, ref.id, known)
        digest = known if reused else _write_shard_atomically(normalised.table, out / shard, ref.id)
        record = TableRecord(
            id=ref.id,
            source=ref.source,
            locator=ref.locator,
            fingerprint=normalised.fingerprint,
            shard=shard,
            n_rows=normalised.n_rows,
            columns=normalised.records,
            candidate_targets=normalised.candidate_targets,
            treatments=list(loaded.notes) + normalised.treatments,  # how the file was read, then normalised
        )
        return TableOutcome(ref.id, record=record, reused=reused, shard_digest=digest)
    except TableError as exc:
        return TableOutcome(ref.id, skipped_reason=_without_table_prefix(exc))
    except Exception as exc:  # anything unforeseen in one table is that table's problem, not the ingest's
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        return TableOutcome(ref.id, skipped_reason=f"failed to normalise: {type(exc).__name__}: {first_line}")


def _without_table_prefix(exc: TableError) -> str:
    """The report already names the table; keep the column, drop the repeated table name."""
    text = str(exc)
    prefix = f"table {exc.table!r}, " if exc.column is not None else f"table {exc.table!r}: "
    return text[len(prefix):] if exc.table is not None and text.startswith(prefix) else text


def _write_shard_atomically(table, path: Path, table_id: str) -> dict:
    """Write the shard under a temporary name, then rename; returns its {"id", "size", "sha256"}."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        digest = {"id": table_id, "size": tmp.stat().st_size, "sha256": _file_sha256(tmp)}
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest


def shard_name(table_id: str, fingerprint: str) -> str:
    """`<readable id prefix>-<SHA-256 of the whole id>-<content fingerprint>.parquet`.

    The prefix is for people (cut, and lossy: `a/b` and `a__b` look alike); the full SHA-256 of the id is
    what keeps names apart, so distinct ids share a shard only on a SHA-256 collision. Even then a shard is
    only reused when the state file records it as written for that very id (`_shard_is_intact`).
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", table_id.replace("/", "__"))[:80]
    id_hash = hashlib.sha256(table_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{readable}-{id_hash}-{fingerprint[:16]}.parquet"


def _read_manifest_lines(out: Path) -> dict[str, tuple[TableRecord, str]]:
    """Records of an earlier run with their lines; lines that do not parse (an older format) are ignored."""
    path = out / MANIFEST_NAME
    if not path.exists():
        return {}
    previous = {}
    for line in path.read_text().splitlines():
        try:
            record = TableRecord.from_json(line)
        except (ValueError, TypeError, KeyError):
            continue
        previous[record.id] = (record, line + "\n")
    return previous


def _remove_unreferenced_shards(out: Path, records: list[TableRecord]) -> None:
    """Shards of tables no longer in the corpus (excluded now, or changed content) would only mislead."""
    referenced = {Path(r.shard).name for r in records}
    for shard in (out / SHARDS_DIR).glob("*.parquet"):
        if shard.name not in referenced:
            shard.unlink(missing_ok=True)
