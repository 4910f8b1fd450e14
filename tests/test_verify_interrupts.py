"""`verify` cleans up whatever happened, and says only what it saw (issue 17, item 5).

Each scenario ends with no temporary store in the fake Healthcare API, checked against the fake's
own store list, never against verify's report; and what verify printed is held against the fake:
a store it says it deleted was deleted by a DELETE the fake answered, a store it says is gone is
not in the fake, and a store the fake still holds is named with the command that deletes it.
Ctrl-C is a real SIGINT, sent by the fake while the request is in flight (tests/fakes/
verify_faults.py).
"""

from __future__ import annotations

import json
import re
import shlex
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.errors import EXIT_INTERRUPTED
from tests.conftest import STORE, Cloud
from tests.fakes.healthcare import Fault
from tests.fakes.verify_faults import (
    Interrupt,
    InterruptingHealthcare,
    interrupting_healthcare,
)
from tests.test_verify import outputs_file

runner = CliRunner()
DATASET = STORE.rsplit("/dicomStores/", 1)[0]
TEMPORARY = rf"/v1/{DATASET}/dicomStores/dicom-bq-verify-[0-9a-f]+"
CREATE = rf"/v1/{DATASET}/dicomStores"
STOW = rf"{TEMPORARY}/dicomWeb/studies"
POLL = rf"/v1/{DATASET}/operations/\d+"
STORE_NAME = r"projects/\S+?/dicomStores/dicom-bq-verify-[0-9a-f]+"


@pytest.fixture
def fake(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[InterruptingHealthcare]:
    yield from interrupting_healthcare(cloud, monkeypatch)


def verify(tmp_path: Path, *args: str) -> Any:
    return runner.invoke(app, ["verify", "--outputs", str(outputs_file(tmp_path)), *args])


def temporary_stores(fake: InterruptingHealthcare) -> set[str]:
    return {s for s in fake.stores if "/dicomStores/dicom-bq-verify-" in s}


def said(pattern: str, text: str) -> set[str]:
    return set(re.findall(pattern.replace("STORE", f"({STORE_NAME})"), text))


def orthanc_instances(cloud: Cloud) -> list[str]:
    with urllib.request.urlopen(f"{cloud.orthanc_url}/instances", timeout=10) as answer:
        found: list[str] = json.loads(answer.read())
    return found


def assert_output_matches_the_fake(result: Any, fake: InterruptingHealthcare) -> None:
    """What verify said about temporary stores is what the fake holds and saw."""
    text = result.output + result.stderr
    deleted = said(r"deleted temporary store STORE\b", text)
    gone = said(r"temporary store STORE no longer exists", text) | said(
        r"creating temporary store STORE was unknown \([^)]*\); dicomStores\.get answered 404", text
    )
    for name in deleted:
        assert name in fake.deleted_stores, f"said deleted, but no DELETE of {name} succeeded"
    for name in deleted | gone:
        assert name not in fake.stores, f"said gone, but the fake holds {name}"
    for name in temporary_stores(fake):
        store = name.rsplit("/", 1)[1]
        assert name not in deleted | gone
        assert (
            f"gcloud healthcare dicom-stores delete {store} --dataset=imaging "
            "--location=us-central1 --project=dicom-src-test" in text
        ), f"the fake holds {name}, and verify did not say how to delete it"
    assert "the temporary store was deleted" not in text


def test_ctrl_c_while_the_creates_answer_is_on_its_way_finds_and_deletes_the_store(
    cloud: Cloud, fake: InterruptingHealthcare, tmp_path: Path
) -> None:
    fake.interrupts.append(Interrupt("POST", CREATE))
    result = verify(tmp_path)
    assert result.exit_code == EXIT_INTERRUPTED, result.output
    assert [r.path for r in fake.interrupted] == [CREATE.replace("\\", "")]
    assert len(fake.deleted_stores) == 1, result.stderr
    (made,) = fake.deleted_stores
    assert temporary_stores(fake) == set()
    assert fake.created_stores == set()
    assert f"the outcome of creating temporary store {made} was unknown" in result.stderr
    assert f"dicomStores.get found it; deleted temporary store {made}" in result.stderr
    # The last words repeat what the cleanup saw.
    assert result.stderr.strip().splitlines()[-1].startswith("Interrupted (no export had started)")
    assert f"deleted temporary store {made}" in result.stderr.strip().splitlines()[-1]
    assert_output_matches_the_fake(result, fake)


def test_ctrl_c_before_google_acted_on_the_create_finds_nothing_and_deletes_nothing(
    cloud: Cloud, fake: InterruptingHealthcare, tmp_path: Path
) -> None:
    fake.interrupts.append(Interrupt("POST", CREATE, processed=False))
    result = verify(tmp_path)
    assert result.exit_code == EXIT_INTERRUPTED, result.output
    assert temporary_stores(fake) == set()
    assert fake.deleted_stores == []
    (name,) = said(r"creating temporary store STORE was unknown", result.stderr)
    assert f"GET /v1/{name}" in [f"{r.method} {r.path}" for r in fake.requests]
    assert "dicomStores.get answered 404: it does not exist, nothing to delete" in result.stderr
    assert "deleted temporary store" not in result.stderr
    assert_output_matches_the_fake(result, fake)


def test_ctrl_c_during_stow_rs_deletes_the_store_and_its_instance(
    cloud: Cloud, fake: InterruptingHealthcare, tmp_path: Path
) -> None:
    fake.interrupts.append(Interrupt("POST", STOW))
    result = verify(tmp_path)
    assert result.exit_code == EXIT_INTERRUPTED, result.output
    assert len(fake.interrupted) == 1
    (made,) = fake.deleted_stores
    # The cleanup's DELETE reached the fake as a DELETE (not swallowed by the STOW's answer).
    assert [r.method for r in fake.requests if r.path == f"/v1/{made}"] == ["DELETE"]
    assert temporary_stores(fake) == set()
    assert orthanc_instances(cloud) == []  # the synthetic instance went with its store
    assert re.search(r"FAILED seed +[0-9.]+s  interrupted \(Ctrl-C\)", result.stderr)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Interrupted (no export had started); cleanup: ")
    assert f"deleted temporary store {made}" in last
    assert_output_matches_the_fake(result, fake)


def test_ctrl_c_during_in_place_stow_rs_deletes_the_synthetic_instance(
    cloud: Cloud, fake: InterruptingHealthcare, tmp_path: Path
) -> None:
    fake.interrupts.append(Interrupt("POST", rf"/v1/{STORE}/dicomWeb/studies"))
    result = verify(tmp_path, "--in-place")
    assert result.exit_code == EXIT_INTERRUPTED, result.output
    assert orthanc_instances(cloud) == []  # stored before Ctrl-C, deleted by the cleanup
    assert re.search(r"cleanup: deleted synthetic instance [0-9.]+", result.stderr)
    assert fake.stores == {STORE}


def _interrupted_twice(
    fake: InterruptingHealthcare, tmp_path: Path, *, processed: bool, presses_in_cleanup: int
) -> Any:
    fake.export_seconds = 60
    fake.interrupts += [
        Interrupt("GET", POLL),  # Ctrl-C while the export runs...
        Interrupt("DELETE", TEMPORARY, processed, times=presses_in_cleanup),  # ...and in cleanup
    ]
    return verify(tmp_path)


def test_a_second_ctrl_c_during_the_cleanup_finishes_it(
    cloud: Cloud, fake: InterruptingHealthcare, tmp_path: Path
) -> None:
    result = _interrupted_twice(fake, tmp_path, processed=False, presses_in_cleanup=1)
    assert result.exit_code == EXIT_INTERRUPTED, result.output
    assert [r.method for r in fake.interrupted] == ["GET", "DELETE"]
    assert "Ctrl-C during the cleanup: finishing it first" in result.stderr
    (made,) = fake.deleted_stores  # the DELETE sent again after the interrupted one
    assert temporary_stores(fake) == set()
    (operation,) = fake.operations
    last = result.stderr.strip().splitlines()[-1]
    assert f"follow it with: dicom-bq operations wait {operation}" in last
    assert f"cleanup: deleted temporary store {made}" in last
    assert_output_matches_the_fake(result, fake)


def test_a_second_ctrl_c_after_the_delete_was_done_says_the_store_is_gone(
    cloud: Cloud, fake: InterruptingHealthcare, tmp_path: Path
) -> None:
    result = _interrupted_twice(fake, tmp_path, processed=True, presses_in_cleanup=1)
    assert result.exit_code == EXIT_INTERRUPTED, result.output
    (made,) = fake.deleted_stores  # by the interrupted DELETE; the second one found nothing
    assert temporary_stores(fake) == set()
    assert f"temporary store {made} no longer exists (its DELETE answered 404)" in result.stderr
    assert f"deleted temporary store {made}" not in result.stderr
    assert_output_matches_the_fake(result, fake)


def test_a_third_ctrl_c_stops_the_cleanup_and_prints_the_command_that_finishes_it(
    cloud: Cloud, fake: InterruptingHealthcare, tmp_path: Path
) -> None:
    result = _interrupted_twice(fake, tmp_path, processed=False, presses_in_cleanup=2)
    assert result.exit_code == EXIT_INTERRUPTED, result.output
    (left,) = temporary_stores(fake)
    assert fake.deleted_stores == []
    last = result.stderr.strip().splitlines()[-1]
    assert "cleanup NOT finished" in last
    assert "stopped by a second Ctrl-C; finish by hand" in last
    assert "deleted temporary store" not in result.stderr
    assert_output_matches_the_fake(result, fake)
    # The printed command names the store the fake holds: what it deletes leaves none.
    (command,) = re.findall(r"`(gcloud healthcare dicom-stores delete [^`]+)`", last)
    words = shlex.split(command)
    flags = dict(w.removeprefix("--").split("=", 1) for w in words if w.startswith("--"))
    name = (
        f"projects/{flags['project']}/locations/{flags['location']}/datasets/"
        f"{flags['dataset']}/dicomStores/{words[4]}"
    )
    assert name == left
    request = urllib.request.Request(f"{fake.url}/v1/{name}", method="DELETE")
    urllib.request.urlopen(request, timeout=10).close()
    assert temporary_stores(fake) == set()


def test_a_create_answered_500_after_google_made_the_store_is_found_and_deleted(
    cloud: Cloud, fake: InterruptingHealthcare, tmp_path: Path
) -> None:
    # Every attempt answered 500: the first made the store, the retries found it there.
    fake.faults.append(Fault("POST", "/dicomStores$", 500, times=6, after=True))
    result = verify(tmp_path, "--json")
    assert result.exit_code == 1, result.output
    (made,) = fake.deleted_stores
    assert temporary_stores(fake) == set()
    steps = {s["step"]: s for s in json.loads(result.stdout)["steps"]}
    assert f"the create of temporary store {made} got no answer" in steps["temp-store"]["detail"]
    cleanup = steps["cleanup"]["detail"]
    assert f"the outcome of creating temporary store {made} was unknown" in cleanup
    assert f"dicomStores.get found it; deleted temporary store {made}" in cleanup
    assert "cannot create" not in result.output + result.stderr
    assert_output_matches_the_fake(result, fake)


def test_a_create_answered_500_before_google_acted_deletes_nothing(
    cloud: Cloud, fake: InterruptingHealthcare, tmp_path: Path
) -> None:
    fake.faults.append(Fault("POST", "/dicomStores$", 500, times=6))
    result = verify(tmp_path, "--json")
    assert result.exit_code == 1, result.output
    assert temporary_stores(fake) == set()
    assert fake.deleted_stores == []
    cleanup = {s["step"]: s for s in json.loads(result.stdout)["steps"]}["cleanup"]
    assert "dicomStores.get answered 404: it does not exist, nothing to delete" in cleanup["detail"]
    assert_output_matches_the_fake(result, fake)


def test_a_delete_whose_answers_were_lost_is_checked_with_a_get(
    cloud: Cloud, fake: InterruptingHealthcare, tmp_path: Path
) -> None:
    # The first DELETE deleted the store; its answer and the retries' (404s) became 500s.
    fake.faults.append(Fault("DELETE", "/dicomStores/dicom-bq-verify-", 500, times=6, after=True))
    result = verify(tmp_path, "--json")
    assert temporary_stores(fake) == set()
    cleanup = {s["step"]: s for s in json.loads(result.stdout)["steps"]}["cleanup"]
    assert cleanup["ok"], cleanup
    assert re.search(
        r"no longer exists \(its DELETE answered 503, then dicomStores.get 404\)", cleanup["detail"]
    )
    assert "could not delete" not in cleanup["detail"]
    assert result.exit_code == 0, result.output
    assert_output_matches_the_fake(result, fake)


def test_a_delete_that_keeps_failing_names_the_store_and_the_command(
    cloud: Cloud, fake: InterruptingHealthcare, tmp_path: Path
) -> None:
    fake.faults.append(Fault("DELETE", "/dicomStores/dicom-bq-verify-", 500, times=6))
    result = verify(tmp_path, "--json")
    assert result.exit_code == 1, result.output
    (left,) = temporary_stores(fake)
    cleanup = {s["step"]: s for s in json.loads(result.stdout)["steps"]}["cleanup"]
    assert not cleanup["ok"]
    assert f"could not delete temporary store {left} (503 " in cleanup["detail"]
    assert "dicomStores.get still finds it): delete it with `gcloud" in cleanup["detail"]
    assert_output_matches_the_fake(result, fake)
