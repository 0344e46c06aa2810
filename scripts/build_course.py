#!/usr/bin/env python
"""Execute every course notebook with papermill, then build the Jupyter Book.

The pipeline has three steps:

1. make sure the data for the chosen profile exist
   (``tutorial_lib.course_data.ensure_course_data``);
2. execute each chapter listed in ``_toc.yml`` with papermill on the
   ``brats-course`` kernel into ``<out>/course/notebooks/`` (the source
   notebooks are never modified), timing each one, and remove the exercises'
   hidden tests (nbgrader's ``### BEGIN HIDDEN TESTS`` regions) from the
   executed copies, so that the book shows only the tests a learner sees;
3. copy ``_config.yml``, ``_toc.yml`` and ``book/`` next to the executed
   copies and run ``jupyter-book build -W -n --keep-going`` there, so that the
   book is built from executed notebooks and any Sphinx warning fails the run.

It prints a table of per-notebook execution times, writes them to
``<out>/course/timings.json`` and ends with the absolute path of
``index.html``. The terminal shows papermill's progress bars and the build's
own lines only: what each chapter's kernel (and every process it starts)
writes to stdout and stderr goes to ``<out>/course/logs/<chapter>.log``,
which a failed chapter's message names.

Examples
--------
``python scripts/build_course.py --profile ci``
``python scripts/build_course.py --profile gpu --cache-dir /data/brats2017_cache --run-root /scratch/runs``
``python scripts/build_course.py --notebooks 03 06``   (re-run two chapters)
``python scripts/build_course.py --profile dry-run``   (the gpu path at full size on a CPU)
``python scripts/build_course.py --skip-execute``      (rebuild the book only)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, TextIO

import yaml

from tutorial_lib._files import write_json_atomic
from tutorial_lib._kernel import KERNEL_NAME
from tutorial_lib.config import PROFILES, get_profile
from tutorial_lib.workers import worker_environment

__all__ = [
    "KERNEL_NAME",
    "ChapterRun",
    "read_pages",
    "read_chapters",
    "select_chapters",
    "start_order",
    "source_fingerprint",
    "stage_book",
    "without_unset_repository",
    "execute_chapter",
    "PeakMemory",
    "write_placeholders",
    "build_book",
    "main",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMINGS_FILE = "timings.json"
PLACEHOLDER_KEY = "brats_course_placeholder"
FINGERPRINT_SOURCES = ("_config.yml", "_toc.yml", "book", "notebooks", "tutorial_lib", "data_scripts", "scripts")
FINGERPRINT_SUFFIXES = {".yml", ".md", ".bib", ".ipynb", ".py"}


@dataclass
class ChapterRun:
    """Outcome of executing one chapter.

    Attributes
    ----------
    name : str
        Notebook stem, e.g. ``"03_unet3d_gpu"``.
    status : {"ok", "failed"}
        Whether papermill finished without a cell error.
    seconds : float
        Wall time of the execution, kernel start included (other chapters may
        have run alongside: ``timings.json`` says how many at once).
    profile : str
        Run profile the chapter was executed with.
    keras_backend : str
        ``KERAS_BACKEND`` the kernel inherited.
    fingerprint : str
        ``source_fingerprint`` of the sources at execution time.
    error : str or None
        For a failed chapter: which cell failed and the exception, and where
        its kernel's log is.
    peak_rss_mb : float or None
        Largest resident memory of the chapter's kernel (its process tree), in MiB,
        sampled every 0.2 s.
    """

    name: str
    status: str
    seconds: float
    profile: str
    keras_backend: str
    fingerprint: str
    error: str | None = None
    peak_rss_mb: float | None = None


def read_pages(root: Path) -> list[str]:
    """Return every page of the book, in table-of-contents order.

    Parameters
    ----------
    root : Path
        Folder holding ``_toc.yml``.

    Returns
    -------
    list of str
        Doc names relative to ``root`` without suffix, e.g.
        ``["book/intro", "book/setup", ..., "notebooks/01_data_exploration", ...]``.

    Raises
    ------
    FileNotFoundError
        If ``_toc.yml`` is missing.
    """
    toc_path = Path(root) / "_toc.yml"
    if not toc_path.is_file():
        raise FileNotFoundError(f"{toc_path}: no table of contents; is --root the course folder?")
    return list(_toc_files(yaml.safe_load(toc_path.read_text(encoding="utf-8"))))


def read_chapters(root: Path) -> list[str]:
    """Return the notebook chapters (pages under ``notebooks/``) of the book.

    Parameters
    ----------
    root : Path
        Folder holding ``_toc.yml``.

    Returns
    -------
    list of str
        E.g. ``["notebooks/01_data_exploration", ...]``, in table-of-contents order.
    """
    return [name for name in read_pages(root) if name.startswith("notebooks/")]


def _toc_files(node: Any) -> Iterable[str]:
    """Yield every ``file:`` entry of a (nested) table of contents."""
    if isinstance(node, dict):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                yield str(Path(node[key]).with_suffix("").as_posix())
        for value in node.values():
            if isinstance(value, (dict, list)):
                yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


def select_chapters(chapters: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    """Pick the chapters named in ``wanted`` (a number, a stem or a path).

    Parameters
    ----------
    chapters : sequence of str
        All chapters, as returned by :func:`read_chapters`.
    wanted : sequence of str or None
        Selection such as ``["03", "06_postprocessing"]``; ``None`` selects all.

    Returns
    -------
    list of str
        The selected chapters in table-of-contents order.

    Raises
    ------
    ValueError
        If an entry matches no chapter or more than one.

    Examples
    --------
    >>> select_chapters(["notebooks/01_a", "notebooks/02_b"], ["2"])
    ['notebooks/02_b']
    """
    if not wanted:
        return list(chapters)
    selected = set()
    for entry in wanted:
        key = Path(entry).stem
        matches = [c for c in chapters if Path(c).name == key or Path(c).name.split("_")[0] == key.zfill(2)]
        if len(matches) != 1:
            names = ", ".join(Path(c).name for c in chapters)
            raise ValueError(f"--notebooks {entry!r} matches {len(matches)} chapters; choose from: {names}")
        selected.add(matches[0])
    return [c for c in chapters if c in selected]


def source_fingerprint(root: Path) -> str:
    """Hash everything an executed chapter or the book depends on.

    Parameters
    ----------
    root : Path
        The course folder.

    Returns
    -------
    str
        SHA-256 hex digest over the paths and bytes of the book configuration,
        pages, notebooks, library and scripts. Tests compare it to decide
        whether a previous build can be reused.
    """
    digest = hashlib.sha256()
    root = Path(root)
    for entry in FINGERPRINT_SOURCES:
        path = root / entry
        files = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        for file in files:
            if file.is_file() and file.suffix in FINGERPRINT_SUFFIXES and "checkpoint" not in file.name:
                digest.update(file.relative_to(root).as_posix().encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()


def stage_book(root: Path, book_dir: Path) -> None:
    """Copy the book configuration and prose pages into the build tree.

    ``_config.yml`` goes through :func:`without_unset_repository`, so a book
    with no repository URL gets no launch or repository buttons.

    ``book/`` is replaced as a whole so that a page deleted from the sources
    also disappears from the build; executed notebooks are left alone.

    Parameters
    ----------
    root : Path
        The course folder (sources).
    book_dir : Path
        The build tree, e.g. ``_build/course``.
    """
    book_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / "_toc.yml", book_dir / "_toc.yml")
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    (book_dir / "_config.yml").write_text(yaml.safe_dump(without_unset_repository(config), sort_keys=False),
                                          encoding="utf-8")
    shutil.rmtree(book_dir / "book", ignore_errors=True)
    shutil.copytree(root / "book", book_dir / "book", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))


def without_unset_repository(config: dict[str, Any]) -> dict[str, Any]:
    """The book configuration without launch, repository and issue buttons when no repository URL is set.

    Those buttons are built from ``repository.url``; with it empty they would
    point nowhere, so the book has none.

    Examples
    --------
    >>> staged = without_unset_repository({"repository": {"url": ""}, "launch_buttons": {"colab_url": "x"},
    ...                                    "html": {"use_repository_button": True}})
    >>> sorted(staged), staged["html"]
    (['html'], {'use_repository_button': False, 'use_issues_button': False})
    """
    if (config.get("repository") or {}).get("url"):
        return config
    staged = {key: value for key, value in config.items() if key not in ("repository", "launch_buttons")}
    staged["html"] = {**config.get("html", {}), "use_repository_button": False, "use_issues_button": False}
    return staged


def execute_chapter(
    source: Path,
    target: Path,
    *,
    parameters: dict[str, Any],
    cell_timeout: float | None = None,
    kernel_name: str = KERNEL_NAME,
    progress: bool | dict[str, Any] = True,
    log: Path | None = None,
) -> str | None:
    """Execute ``source`` with papermill and write the executed copy to ``target``.

    The copy is written under a temporary name and renamed on success, so
    ``target`` is either a complete executed notebook or absent. A failed
    execution is kept next to it as ``<name>.failed.ipynb`` for inspection.

    With ``log``, this process's file descriptors 1 and 2 point to that file
    while papermill runs, so the kernel and every process it starts (which
    inherit them) write there instead of the terminal; papermill's progress bar
    still writes to the terminal.

    Parameters
    ----------
    source : Path
        Notebook without outputs.
    target : Path
        Where the executed copy goes; the kernel's working directory is its folder.
    parameters : dict
        Papermill parameters (``profile``, optionally ``cache_dir``).
    cell_timeout : float or None
        Seconds a single cell may run; ``None`` for no limit.
    kernel_name : str
        Jupyter kernel to run on.
    progress : bool or dict
        papermill's progress bar: on, off, or the options of its ``tqdm`` bar.
    log : Path or None
        File for the kernel's stdout and stderr, emptied first; ``None`` leaves
        them on this process's own.

    Returns
    -------
    str or None
        ``None`` on success, otherwise a message naming the failing cell, ending
        with ``"; kernel log: <log>"`` when there is a log.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.stem}.partial.ipynb")
    target.unlink(missing_ok=True)
    see_log = "" if log is None else f"; kernel log: {log}"
    try:
        with contextlib.nullcontext(sys.stderr) if log is None else _kernel_output_to(log) as terminal:
            if progress and log is not None:  # tqdm writes to sys.stderr, whose fd now leads to the log
                progress = (progress if isinstance(progress, dict) else {}) | {"file": terminal}
            for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
                try:
                    papermill.execute_notebook(
                        str(source), str(partial), parameters=parameters, kernel_name=kernel_name,
                        cwd=str(target.parent), execution_timeout=cell_timeout, progress_bar=progress,
                    )
                    break
                except RuntimeError as error:
                    if not _kernel_did_not_start(error) or attempt == KERNEL_START_ATTEMPTS:
                        raise
                    print(f"{source.stem}: the kernel died while starting ({error}); starting another",
                          file=terminal, flush=True)
    except PapermillExecutionError as error:
        os.replace(partial, target.with_name(f"{target.stem}.failed.ipynb"))
        return f"{_describe_cell(source, error.source, error.exec_count)}: {error.ename}: {error.evalue}{see_log}"
    except Exception as error:  # kernel death, timeout, missing kernel: still report per chapter
        partial.unlink(missing_ok=True)
        return f"{type(error).__name__}: {error}{see_log}"
    _prepare_for_the_book(partial)
    os.replace(partial, target)
    target.with_name(f"{target.stem}.failed.ipynb").unlink(missing_ok=True)
    return None


# Kernels started side by side can pick the same free port (jupyter_client chooses the
# ports before the kernel binds them); the loser dies before running any cell.
KERNEL_START_ATTEMPTS = 3


@contextlib.contextmanager
def _kernel_output_to(log: Path) -> Iterator[TextIO]:
    """Point this process's file descriptors 1 and 2 at ``log`` (emptied) for the block; yield a stream to the old fd 2.

    A kernel inherits the descriptors, not ``sys.stdout``/``sys.stderr``, and so
    do the processes it starts (TensorFlow's C++ logging, Dask workers): only
    moving the descriptors themselves catches all of them.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    # Python's buffers write to whatever fd 1 and 2 are when flushed: the build's lines belong on the terminal.
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                         errors="replace")
    try:
        with open(log, "wb") as sink:
            for fd in saved:
                os.dup2(sink.fileno(), fd)
        yield terminal
    finally:
        with contextlib.suppress(Exception):  # what papermill's own process wrote meanwhile goes to the log
            sys.stdout.flush()
            sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        terminal.close()


def _kernel_did_not_start(error: BaseException) -> bool:
    """True for jupyter_client's error when a kernel dies before answering its first request."""
    return "before replying to kernel_info" in str(error)


class PeakMemory:
    """Largest total resident memory of this process's children while the block runs, in MiB.

    papermill starts each chapter's kernel as a child process, so this is the
    chapter's peak memory, what ``benchmarks/RESULTS.md`` tabulates.
    """

    def __init__(self, interval_s: float = 0.2):
        self.interval_s, self.peak_mb = interval_s, 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.interval_s):
            total = 0
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            self.peak_mb = max(self.peak_mb, total / 2**20)

    def __enter__(self) -> "PeakMemory":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join()


def _prepare_for_the_book(notebook_path: Path) -> None:
    """Drop the exercises' hidden tests and hide papermill's injected parameters in an executed copy.

    The book shows the exercises' visible tests only, and each chapter's own
    ``parameters`` cell: papermill's ``injected-parameters`` copy under it would
    show the profile a second time.
    """
    import nbformat
    from nbgrader.preprocessors import ClearHiddenTests

    notebook = nbformat.read(notebook_path, as_version=4)
    notebook, _ = ClearHiddenTests().preprocess(notebook, {})
    for cell in notebook.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
    nbformat.write(notebook, notebook_path)


def _describe_cell(notebook: Path, cell_source: str, exec_count: int | None) -> str:
    """Name a failing cell the way a reader finds it: its number in the source notebook."""
    import nbformat

    cells = nbformat.read(notebook, as_version=4).cells
    numbers = [number for number, cell in enumerate(cells, start=1) if cell.source == cell_source]
    first_line = next((line.strip() for line in cell_source.splitlines() if line.strip()), "")
    where = f"cell {numbers[0]} of {len(cells)}" if len(numbers) == 1 else "a cell"
    return f"{where} (In [{exec_count}], starting {first_line!r})"


def build_book(book_dir: Path) -> Path:
    """Run ``jupyter-book build -W -n --keep-going`` on the build tree.

    Parameters
    ----------
    book_dir : Path
        Folder holding ``_config.yml``, ``_toc.yml``, ``book/`` and the
        executed ``notebooks/``.

    Returns
    -------
    Path
        Absolute path of the built ``index.html``.

    Raises
    ------
    RuntimeError
        If the build fails (any Sphinx warning counts as an error).
    """
    executable = Path(sys.executable).with_name("jupyter-book")
    command = [str(executable) if executable.exists() else "jupyter-book", "build", str(book_dir),
               "--all", "-W", "-n", "--keep-going"]
    print("$ " + " ".join(command), flush=True)
    if subprocess.run(command, check=False).returncode != 0:
        raise RuntimeError(f"jupyter-book build failed for {book_dir} (warnings are errors; see the log above)")
    index = (book_dir / "_build" / "html" / "index.html").resolve()
    if not index.is_file():
        raise RuntimeError(f"{index}: jupyter-book finished but wrote no index.html")
    return index


def _load_timings(path: Path) -> dict[str, Any]:
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            print(f"warning: {path} is not valid JSON; starting a new record", file=sys.stderr)
    return {"chapters": {}}


def _print_table(runs: Sequence[ChapterRun], wall_seconds: float) -> None:
    width = max([len(run.name) for run in runs] + [len("notebooks, wall time")])
    print(f"\n{'notebook':<{width}}  {'status':<6}  {'seconds':>8}")
    print(f"{'-' * width}  {'-' * 6}  {'-' * 8}")
    for run in runs:
        print(f"{run.name:<{width}}  {run.status:<6}  {run.seconds:8.1f}")
    print(f"{'sum':<{width}}  {'':<6}  {sum(run.seconds for run in runs):8.1f}")
    print(f"{'notebooks, wall time':<{width}}  {'':<6}  {wall_seconds:8.1f}\n")


def _ensure_data(profile: str, cache_dir: Path | None, n_cases: int | None = None) -> Path:
    """Check a user-given cache, or make the synthetic data of the profile (``n_cases`` of them if given).

    A ``--cache-dir`` is only read, never written: it holds the user's prepared
    real data, and generating synthetic cases into it would spoil it.
    """
    from tutorial_lib import course_data, data
    from tutorial_lib.config import get_profile

    if cache_dir is not None:
        manifest, split = data.load_manifest(cache_dir), data.load_split(cache_dir)
        print(f"data: {cache_dir} ({len(manifest['cases'])} cases, downsample {manifest['downsample']}, "
              f"{len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test)", flush=True)
        return Path(cache_dir)
    n_cases = get_profile(profile, n_cases=n_cases)["n_cases"]
    path = course_data.ensure_course_data(profile, n_cases=n_cases)
    print(f"data for profile {profile!r}, {n_cases} synthetic cases: {path}", flush=True)
    return Path(path)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=tuple(PROFILES), default="ci",
                        help="run profile passed to every notebook (default: ci); dry-run is the gpu "
                             "profile's full-size path made affordable for a CPU")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="prepared cache of real data (data_scripts/prepare_brats.py); "
                             "default: synthetic data made for the profile")
    parser.add_argument("--notebooks", nargs="+", default=None, metavar="CHAPTER",
                        help="execute only these chapters, e.g. 03 06_postprocessing; the others "
                             "keep their previous executed copies (or get a placeholder page)")
    parser.add_argument("--out", type=Path, default=None,
                        help="build folder; the book tree goes to OUT/course (default: <repo>/_build)")
    parser.add_argument("--run-root", type=Path, default=None,
                        help="folder for the chapters' training runs (default: $BRATS_COURSE_RUNS, "
                             "else <data root>/runs); never inside --cache-dir")
    parser.add_argument("--skip-execute", action="store_true",
                        help="do not execute notebooks, rebuild the book from existing executed copies")
    parser.add_argument("--cases", type=int, default=None, metavar="N",
                        help="synthetic data with N cases instead of the profile's (memory against cases)")
    parser.add_argument("--cell-timeout", type=float, default=None,
                        help="seconds one cell may run (default: the profile's execution.book_cell_timeout_s)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="chapters executed at once (default: the profile's execution.book_jobs)")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cases is not None and args.cache_dir is not None:
        parser.error("--cases makes synthetic data; it cannot be combined with --cache-dir")
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.cases is not None and args.cases < 3:
        parser.error(f"--cases needs at least 3 cases (train, validation, test), got {args.cases}")
    return args


def _execute_timed(source: Path, target: Path, parameters: dict[str, Any], timeout: float | None,
                   progress: bool | dict[str, Any], log: Path | None = None) -> tuple[str | None, float, float]:
    """Execute one chapter; return its error (or None), seconds and peak memory in MiB.

    Module-level so that a worker process can run it: the kernel is then that
    worker's only child, and the peak memory that chapter's alone. The kernel's
    output goes to ``log`` (see :func:`execute_chapter`); in a worker the
    redirection is the worker's own, so chapters running at once keep apart.
    """
    start = time.perf_counter()
    with PeakMemory() as memory:
        error = execute_chapter(source, target, parameters=parameters, cell_timeout=timeout, progress=progress,
                                log=log)
    return error, time.perf_counter() - start, round(memory.peak_mb, 1)


def _kernel_threads(jobs: int, threads: int | None = None) -> dict[str, str]:
    """TensorFlow's thread pools for one of ``jobs`` kernels running at once: its share of the cores.

    A profile that fixes ``threads`` gets that many per operation (``open_chapter`` sets it too).
    """
    environment = worker_environment(jobs, threads=threads)  # as a grid's worker processes split them
    return {name: environment[name] for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}


def _default_environment(values: dict[str, str]) -> None:
    """Set what the user has not set; a worker's kernel inherits it."""
    for key, value in values.items():
        os.environ.setdefault(key, value)


def _execute_all(args: argparse.Namespace, chapters: Sequence[str], book_dir: Path) -> list[ChapterRun]:
    """Execute ``chapters``, ``--jobs`` at a time (in :func:`start_order`), recorded in table-of-contents order.

    Each finished chapter is recorded at once in ``timings.json``; its kernel's
    output is in ``<book_dir>/logs/<name>.log``. Chapters that run at once and
    ask for the same network share it: the run cache trains a configuration
    once and the other waits for it (``experiments.cached_run``).
    """
    parameters: dict[str, Any] = {"profile": args.profile}
    if args.cache_dir is not None:
        parameters["cache_dir"] = str(args.cache_dir.resolve())
    execution = get_profile(args.profile, "execution")
    timeout = args.cell_timeout or execution["book_cell_timeout_s"]
    jobs = min(args.jobs or execution["book_jobs"], len(chapters))
    fingerprint = source_fingerprint(args.root)
    timings_path = book_dir / TIMINGS_FILE
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    runs: dict[str, ChapterRun] = {}

    def record(name: str, error: str | None, seconds: float, peak_mb: float) -> None:
        run = ChapterRun(name, "failed" if error else "ok", seconds, args.profile, backend, fingerprint, error, peak_mb)
        print(f"{name}: {run.status} in {run.seconds:.1f} s, peak memory {run.peak_rss_mb:.0f} MiB"
              + (f"\n  {error}" if error else ""), flush=True)
        timings = _load_timings(timings_path)
        timings["chapters"][name] = asdict(run) | {"finished": dt.datetime.now().isoformat(timespec="seconds"),
                                                   "jobs": jobs}
        write_json_atomic(timings_path, timings, indent=2, sort_keys=True)
        runs[name] = run

    tasks = {Path(chapter).name: (args.root / f"{chapter}.ipynb", book_dir / f"{chapter}.ipynb")
             for chapter in chapters}
    logs = {name: book_dir / "logs" / f"{name}.log" for name in tasks}
    if jobs == 1:
        for name, (source, target) in tasks.items():
            print(f"\n=== executing {name} (profile {args.profile}) ===", flush=True)
            record(name, *_execute_timed(source, target, parameters, timeout, True, logs[name]))
        return list(runs.values())
    print(f"\n=== executing {len(tasks)} chapters, {jobs} at a time (profile {args.profile}) ===", flush=True)
    import concurrent.futures
    import multiprocessing

    # Kernels left at TensorFlow's own thread count would oversubscribe the cores: three at
    # once took longer than one after the other.
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_default_environment,
                                                initargs=(_kernel_threads(jobs, execution["threads"]),)) as pool:
        # execute_chapter, in the worker, gives the progress bar its stream: an open file cannot be pickled.
        futures = {pool.submit(_execute_timed, *tasks[Path(chapter).name], parameters, timeout,
                               {"desc": Path(chapter).name, "mininterval": 10}, logs[Path(chapter).name]):
                   Path(chapter).name
                   for chapter in start_order(chapters, execution["book_start_order"])}
        for future in concurrent.futures.as_completed(futures):
            record(futures[future], *future.result())
    return [runs[name] for name in tasks]


def start_order(chapters: Sequence[str], first: Sequence[str]) -> list[str]:
    """The chapters in the order they start side by side: those numbered in ``first``, then the rest.

    Examples
    --------
    >>> start_order(["nb/01_a", "nb/02_b", "nb/03_c"], ["03"])
    ['nb/03_c', 'nb/01_a', 'nb/02_b']
    """
    number = {Path(chapter).name.split("_")[0]: chapter for chapter in chapters}
    ahead = [number[key] for key in first if key in number]
    return ahead + [chapter for chapter in chapters if chapter not in ahead]


def _is_executed_copy(path: Path) -> bool:
    import nbformat

    return path.is_file() and not nbformat.read(path, as_version=4).metadata.get(PLACEHOLDER_KEY)


def _pasted_keys(book_dir: Path) -> dict[str, dict[str, bool]]:
    """Glue keys pages paste from other notebooks, per chapter: key -> pasted with a number format.

    Finds ``{glue:text}`../notebooks/03_x.ipynb::key``` and ``...::key:.3f``` in pages and notebooks.
    """
    pattern = re.compile(r"(\d\d_\w+)\.ipynb::(\w+)(:[^`]*)?`")
    keys: dict[str, dict[str, bool]] = {}
    for page in [*book_dir.glob("book/*.md"), *book_dir.glob("notebooks/*.ipynb")]:
        for stem, key, spec in pattern.findall(page.read_text(encoding="utf-8")):
            chapter = keys.setdefault(stem, {})
            chapter[key] = chapter.get(key, False) or bool(spec) and spec[-1] not in "s"
    return keys


def write_placeholders(chapters: Sequence[str], book_dir: Path) -> list[str]:
    """Stand in for chapters that have no executed copy yet.

    Lets ``--notebooks 03`` on a fresh checkout still build (and check) the
    book: every chapter without an executed copy gets a one-cell notebook that
    says so, marked in its metadata so it is never taken for an executed one.
    Values other pages paste from it (the claims page, for one) are glued as
    "not run in this build", so those pages build and say so.

    Parameters
    ----------
    chapters : sequence of str
        All chapters of the book.
    book_dir : Path
        The build tree.

    Returns
    -------
    list of str
        Names of the chapters that got a placeholder.
    """
    import nbformat

    missing = [c for c in chapters if not _is_executed_copy(book_dir / f"{c}.ipynb")]
    pasted = _pasted_keys(book_dir)
    for chapter in missing:
        title = Path(chapter).name.replace("_", " ")
        code = nbformat.v4.new_code_cell("# values other pages paste from this chapter")
        # A number format (":.3f") needs a number: NaN shows as "nan".
        keys = pasted.get(Path(chapter).name, {})
        code.outputs = [nbformat.v4.new_output(
            "display_data", data={"text/plain": "nan" if numeric else "'not run in this build'"},
            metadata={"scrapbook": {"name": key, "mime_prefix": ""}}) for key, numeric in sorted(keys.items())]
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
            f"# {title}\n\nThis chapter was not executed in this build of the book."), code])
        notebook.metadata[PLACEHOLDER_KEY] = True
        # Without a language myst-nb finds no lexer for the code cell, a warning that fails the build.
        notebook.metadata["language_info"] = {"name": "python"}
        nbformat.write(notebook, book_dir / f"{chapter}.ipynb")
    return [Path(c).name for c in missing]


def _report_failures(runs: Sequence[ChapterRun], book_dir: Path) -> None:
    failed = [run for run in runs if run.status != "ok"]
    for run in failed:
        partial = book_dir / "notebooks" / f"{run.name}.failed.ipynb"
        kept = f" (partial copy: {partial})" if partial.is_file() else ""
        print(f"FAILED {run.name}: {run.error}{kept}", file=sys.stderr)
    print(f"{len(failed)} of {len(runs)} notebooks failed; the book was not built.", file=sys.stderr)


def _build_and_record(root: Path, book_dir: Path, placeholders: Sequence[str]) -> Path:
    start = time.perf_counter()
    index = build_book(book_dir)
    record = _load_timings(book_dir / TIMINGS_FILE)
    record["book"] = {"index": str(index), "seconds": round(time.perf_counter() - start, 1),
                      "fingerprint": source_fingerprint(root), "placeholders": list(placeholders)}
    write_json_atomic(book_dir / TIMINGS_FILE, record, indent=2, sort_keys=True)
    return index


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pipeline; return the process exit code (0 on success)."""
    args = _parse_args(argv)
    args.root = args.root.resolve()
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    # The book is static HTML: viewers must render as figures, not widgets.
    os.environ.setdefault("TUTORIAL_LIB_STATIC_FIGURES", "1")
    if args.run_root is not None:  # the kernels inherit it: tutorial_lib.experiments.run_root
        os.environ["BRATS_COURSE_RUNS"] = str(args.run_root.resolve())
    chapters = read_chapters(args.root)
    book_dir = (args.out.resolve() if args.out else args.root / "_build") / "course"
    stage_book(args.root, book_dir)
    runs: list[ChapterRun] = []
    if not args.skip_execute:
        selected = select_chapters(chapters, args.notebooks)
        data_dir = _ensure_data(args.profile, args.cache_dir, args.cases)
        if args.cases is not None:  # not the profile's own data: the chapters must be told where it is
            args.cache_dir = data_dir
        start = time.perf_counter()
        runs = _execute_all(args, selected, book_dir)
        wall_seconds = time.perf_counter() - start
        timings = _load_timings(book_dir / TIMINGS_FILE)
        timings["notebooks"] = {"chapters": [run.name for run in runs], "wall_seconds": round(wall_seconds, 1)}
        write_json_atomic(book_dir / TIMINGS_FILE, timings, indent=2, sort_keys=True)
        if any(run.status != "ok" for run in runs):
            _print_table(runs, wall_seconds)
            _report_failures(runs, book_dir)
            return 1
    (book_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    placeholders = write_placeholders(chapters, book_dir)
    index = _build_and_record(args.root, book_dir, placeholders)
    if runs:
        _print_table(runs, wall_seconds)
    if placeholders:
        print(f"note: {', '.join(placeholders)} never executed here; their pages are placeholders. "
              "Run without --notebooks to execute every chapter.", file=sys.stderr)
    print(f"book built in {_load_timings(book_dir / TIMINGS_FILE)['book']['seconds']} s")
    print(index)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
