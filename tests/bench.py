"""Benchmarks, reported not asserted:  python -m tests.bench [startup] [plan] [polling] [verify]
                                        [filters] [suite] [engine]

startup  `dicom-bq --help` against `python -c "import typer"` (median of 15 runs each)
plan     `dicom-bq plan --stack prod` wall time, and 20 generated stacks planned in one process
polling  a simulated 30-minute export on virtual time: requests sent and lag after `done`,
         for dicom-bq's backoff, gcloud's waiter and google-api-core's default polling
verify   `dicom-bq verify` against the fakes, Orthanc and the storage emulator, split by step
filters  `filter validate` on a generated 2-million-line file beside `wc -l` and `grep -cE` of
         the same pattern (mean and worst of 5 runs), `filter build --normalize` on it, and
         validate on a 1 GB file that is one line: seconds, lines/s and peak memory
suite    the fast tier's wall time, as `scripts/test` runs it (one worker per core) and on one
         worker (-n 0), and the process tier's (-m processes): mean and worst of
         DICOM_BQ_BENCH_SUITE_RUNS runs (default 3)
engine   the offline `dicom-bq plan` against the real engine's `pulumi preview` of the same
         stacks (dev, prod; median of 3 each), and the engine tier's wall time (-m engine)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def _median_seconds(command: list[str], runs: int) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def startup() -> None:
    typer_import = _median_seconds([sys.executable, "-c", "import typer"], 15)
    help_time = _median_seconds([str(VENV_BIN / "dicom-bq"), "--help"], 15)
    print(f"python -c 'import typer'  {typer_import * 1000:7.0f} ms")
    print(
        f"dicom-bq --help           {help_time * 1000:7.0f} ms  ({help_time / typer_import:.2f}x)"
    )


def plan() -> None:
    from dicom_bq.stack.plan import plan_settings
    from tests.conftest import base_settings

    one = _median_seconds([str(VENV_BIN / "dicom-bq"), "plan", "--stack", "prod", "-f", "json"], 5)
    print(f"dicom-bq plan --stack prod (process)  {one:6.2f} s")
    plan_settings("warm-up", base_settings())
    started = time.perf_counter()
    for index in range(20):
        plan_settings(
            f"gen{index}",
            base_settings(
                dicomStoreId=f"store-{index}",
                destinationProject=f"analytics-{index:03d}",
                streamTables=[f"t{n}" for n in range(index % 6)],
                filterBucket=f"filters-{index:03d}",
            ),
        )
    total = time.perf_counter() - started
    print(f"20 generated stacks in one process    {total:6.2f} s ({total / 20 * 1000:.0f} ms each)")


def polling() -> None:
    """Requests and lag after `done` over many done times (1 to 60 minutes) and jitter draws:
    mean and worst, not one sample (one sample of a jittered, capped backoff says little)."""
    import random
    import statistics

    from dicom_bq.clients.operations import Follower
    from dicom_bq.clients.retry import POLL_BACKOFF, Backoff
    from tests.fakes.clock import VirtualClock

    policies = {
        "dicom-bq (1s, x2, cap 20s, -5% jitter)": POLL_BACKOFF,
        "google-api-core (1s, x1.5, cap 20s)": Backoff(
            initial=1.0, factor=1.5, cap=20.0, jitter=0.0
        ),
        "gcloud waiter (2s, x1.4, cap 180s)": Backoff(
            initial=2.0, factor=1.4, cap=180.0, jitter=0.0
        ),
    }
    draws = random.Random(20261125)
    done_times = [draws.uniform(60.0, 3600.0) for _ in range(500)]
    print(
        f"{'policy (500 done times, 1-60 min)':<42}{'requests mean/worst':>22}{'lag mean/worst':>18}"
    )
    for label, backoff in policies.items():
        requests, lags = [], []
        for done_at in done_times:
            clock = VirtualClock()
            follower = Follower(_TimedSource(clock, done_at), backoff=backoff, clock=clock)
            follower.follow("operations/1", timeout=None)
            requests.append(follower.polls)
            lags.append(clock.now - done_at)
        print(
            f"{label:<42}{statistics.mean(requests):>14.0f} / {max(requests):<5}"
            f"{statistics.mean(lags):>10.1f} / {max(lags):.1f} s"
        )


class _TimedSource:
    """An operation that is done from `done_at` on, on the follower's own clock."""

    def __init__(self, clock: Any, done_at: float) -> None:
        self.clock = clock
        self.done_at = done_at

    def get_operation(self, name: str) -> dict[str, Any]:
        return {"name": name, "done": self.clock.monotonic() >= self.done_at}


def verify() -> None:
    import json
    import os

    from typer.testing import CliRunner

    from dicom_bq.cli import app
    from tests import peers
    from tests.conftest import BQ_DATASET, FILTER_BUCKET, STORE, _ensure_bucket
    from tests.fakes.bigquery import FakeBigQuery
    from tests.fakes.healthcare import FakeHealthcare

    with (
        tempfile.TemporaryDirectory() as workdir,
        peers.orthanc(Path(workdir)) as orthanc_url,
        peers.storage_emulator() as storage_url,
    ):
        bigquery = FakeBigQuery(datasets={BQ_DATASET}).start()
        healthcare = FakeHealthcare(
            bigquery=bigquery, orthanc_url=orthanc_url, storage_url=storage_url, stores={STORE}
        ).start()
        os.environ.update(
            HEALTHCARE_EMULATOR_HOST=healthcare.url,
            BIGQUERY_EMULATOR_HOST=bigquery.url,
            STORAGE_EMULATOR_HOST=storage_url,
        )
        _ensure_bucket(storage_url, FILTER_BUCKET)
        outputs = Path(workdir) / "outputs.json"
        outputs.write_text(
            json.dumps(
                {
                    "dicomStoreName": STORE,
                    "verificationTableUri": f"bq://{BQ_DATASET}.dicom_bq_verification",
                    "filterBucket": FILTER_BUCKET,
                }
            )
        )
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            result = CliRunner().invoke(app, ["verify", "--outputs", str(outputs), "--json"])
            wall = time.perf_counter() - started
            assert result.exit_code == 0, result.output
            runs.append((wall, json.loads(result.stdout)["steps"]))
        wall, steps = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
        print(f"dicom-bq verify (median of 5)  {wall:6.2f} s")
        for step in steps:
            print(f"  {step['step']:<8} {step['seconds']:6.2f} s")
        healthcare.stop()
        bigquery.stop()


FILTER_PATTERN = (
    r"^/studies/[0-9]+(\.[0-9]+)*(/series/[0-9]+(\.[0-9]+)*(/instances/[0-9]+(\.[0-9]+)*)?)?$"
)


def _generate_filter(path: Path, lines: int) -> None:
    """Instance lines of 10-instance series, some repeated, some covered by a series line."""
    with path.open("w", encoding="ascii") as out:
        for n in range(lines):
            study = f"1.2.840.113619.2.55.3.{n // 1000}"
            series = f"{study}.{(n // 10) % 100 + 1}"
            if n % 1000 == 999:
                out.write(f"/studies/{study}/series/{series}\n")
            elif n % 100 == 50:
                out.write(
                    f"/studies/{study}/series/{series}/instances/{series}.{n % 10 + 1 - 1 or 1}\n"
                )
            else:
                out.write(f"/studies/{study}/series/{series}/instances/{series}.{n % 10 + 1}\n")


def _timed(command: str, output: Path) -> tuple[float, int]:
    """Wall seconds and peak resident memory (KiB) of a shell command, by GNU time.

    Output goes to a file: GNU grep stops at the first match when stdout is /dev/null. The
    memory is that of the largest process (validate's worker processes each count alone).
    """
    answer = subprocess.run(
        ["/usr/bin/time", "-f", "%e %M", "bash", "-c", f"{command} > {output}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    seconds, kib = answer.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(kib)


def _generate_long_line(path: Path, size: int) -> None:
    """One line of `size` bytes without a newline: a study path with a huge UID."""
    block = b"1" * (1024 * 1024)
    with path.open("wb") as out:
        out.write(b"/studies/")
        for _ in range(size // len(block)):
            out.write(block)


def filters() -> None:
    lines = int(os.environ.get("DICOM_BQ_BENCH_LINES", "2000000"))
    runs = int(os.environ.get("DICOM_BQ_BENCH_RUNS", "5"))
    long_mb = int(os.environ.get("DICOM_BQ_BENCH_LONG_MB", "1000"))
    cli = VENV_BIN / "dicom-bq"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "filter.txt"
        _generate_filter(path, lines)
        small = Path(folder) / "small.txt"
        small.write_text("/studies/1.2\n")
        stdout = Path(folder) / "stdout.txt"
        size = path.stat().st_size
        print(f"{lines:,} lines, {size / 1e6:.0f} MB, {os.cpu_count()} CPUs, {runs} runs")
        commands = {
            "wc -l": f"wc -l {path}",
            "grep -cE (same pattern)": f"grep -cE '{FILTER_PATTERN}' {path}",
            "dicom-bq filter validate": f"{cli} filter validate {path}",
        }
        timings: dict[str, list[float]] = {label: [] for label in commands}
        peaks: dict[str, int] = dict.fromkeys(commands, 0)
        for _ in range(runs):  # interleaved, so each run of each sees the same machine
            for label, command in commands.items():
                seconds, kib = _timed(command, stdout)
                timings[label].append(seconds)
                peaks[label] = max(peaks[label], kib)
        print(
            f"{'command':<28}{'mean s':>8}{'worst s':>9}{'M lines/s':>11}{'worst':>7}"
            f"{'peak MiB':>10}"
        )
        for label, seconds in timings.items():
            mean, worst = statistics.mean(seconds), max(seconds)
            print(
                f"{label:<28}{mean:>8.2f}{worst:>9.2f}{lines / mean / 1e6:>11.2f}"
                f"{lines / worst / 1e6:>7.2f}{peaks[label] / 1024:>10.0f}"
            )
        ratios = [
            ours / grep
            for ours, grep in zip(
                timings["dicom-bq filter validate"],
                timings["grep -cE (same pattern)"],
                strict=True,
            )
        ]
        print(
            f"validate / grep time: mean {statistics.mean(ratios):.2f}x, "
            f"worst {max(ratios):.2f}x (target: at most 2x, and at least 2 M lines/s)"
        )
        _, baseline = _timed(f"{cli} filter validate {small}", stdout)
        seconds, kib = _timed(
            f"{cli} filter build --normalize -o {folder}/out.txt < {path}", stdout
        )
        print(
            f"dicom-bq filter build --normalize  {seconds:6.2f} s  {lines / seconds / 1e6:.2f} "
            f"M lines/s  peak {kib / 1024:.0f} MiB"
        )
        path.unlink()
        long = Path(folder) / "one-line.txt"
        _generate_long_line(long, long_mb * 1024 * 1024)
        single = [_timed(f"{cli} filter validate {long}", stdout) for _ in range(3)]
        print(
            f"validate, one {long_mb} MiB line: mean {statistics.mean(s for s, _ in single):.2f} s,"
            f" worst {max(s for s, _ in single):.2f} s, peak {max(k for _, k in single) / 1024:.0f}"
            f" MiB (the CLI on a one-line file: {baseline / 1024:.0f} MiB)"
        )


def suite() -> None:
    runs = int(os.environ.get("DICOM_BQ_BENCH_SUITE_RUNS", "3"))
    tiers = (
        ("fast tier, one worker per core (-n auto)", []),
        ("fast tier, one worker (-n 0)", ["-n", "0"]),
        ("process tier (-m processes)", ["-m", "processes"]),
    )
    for label, extra in tiers:
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", *extra],
                check=True,
                capture_output=True,
                cwd=ROOT,
            )
            timings.append(time.perf_counter() - started)
        print(
            f"{label}: mean {statistics.mean(timings):.1f} s, worst {max(timings):.1f} s "
            f"over {runs} runs ({os.cpu_count()} cores)"
        )


def engine() -> None:
    from tests.engine.harness import Workspace

    with tempfile.TemporaryDirectory() as folder:
        for stack in ("dev", "prod"):
            workspace = Workspace.create(Path(folder) / stack)
            workspace.copy_stack(stack)
            workspace.init(stack)
            timings = []
            for _ in range(3):
                started = time.perf_counter()
                workspace.pulumi("preview", stack=stack)
                timings.append(time.perf_counter() - started)
            offline = _median_seconds(
                [str(VENV_BIN / "dicom-bq"), "plan", "--stack", stack, "-f", "json"], 3
            )
            print(
                f"{stack}: dicom-bq plan {offline:5.2f} s, pulumi preview "
                f"{statistics.median(timings):5.2f} s (median of 3)"
            )
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "engine"],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    print(f"engine tier (-m engine, -n auto): {time.perf_counter() - started:.1f} s")


BENCHMARKS = {
    "startup": startup,
    "plan": plan,
    "polling": polling,
    "verify": verify,
    "filters": filters,
    "suite": suite,
    "engine": engine,
}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(BENCHMARKS):
        print(f"== {name}")
        BENCHMARKS[name]()
