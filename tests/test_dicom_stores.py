"""Several DICOM stores in one stack (dicom-bq:dicomStores), beside the single dicomStoreId form.

The stores hold PHI: Pulumi replaces a resource whose logical name (URN) changes, so the single
form's names are pinned here, and the list form's names must not depend on a store's place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dicom_bq.cli import app
from dicom_bq.errors import DicomBqError
from dicom_bq.stack.config import read_stack_config
from dicom_bq.stack.plan import Plan, PlannedResource, plan_settings, plan_stack, record_program
from dicom_bq.vocabulary.contract import OutputNames, StackOutputs
from dicom_bq.vocabulary.settings import SettingsError, parse_settings
from tests import deployment_model as model
from tests.conftest import STORE, Cloud, base_settings, cached_plan
from tests.inventory import ROOT
from tests.stacks import three_store_stack

TOPIC = "projects/dicom-src-test/topics/{name}"
STORE_TYPE = "gcp:healthcare/dicomStore:DicomStore"
# The URNs the example stacks were deployed with (as the recording mock spells them). A store,
# a dataset or a BigQuery dataset under another URN is deleted and recreated by Pulumi.
runner = CliRunner()
PINNED_URNS = {
    stack: {
        f"urn:pulumi:{stack}::dicom-bq::dicom-bq:index:DicomStorage$gcp:healthcare/dataset:Dataset"
        "::dicom-bq-dicom-dataset",
        f"urn:pulumi:{stack}::dicom-bq::dicom-bq:index:DicomStorage"
        "$gcp:healthcare/dicomStore:DicomStore::dicom-bq-dicom-store",
        f"urn:pulumi:{stack}::dicom-bq::dicom-bq:index:BigQueryDestination"
        "$gcp:bigquery/dataset:Dataset::dicom-bq-bigquery-dataset",
    }
    for stack in ("dev", "prod")
}
_PLANS: dict[str, Plan] = {}


def plan_of(name: str, raw: dict[str, Any]) -> Plan:
    if name not in _PLANS:
        _PLANS[name] = plan_settings(name, raw)
    return _PLANS[name]


def three_stores() -> Plan:
    return plan_of("three-stores", three_store_stack())


def resource(plan: Plan, name: str) -> PlannedResource:
    (found,) = [r for r in plan.custom_resources() if r.name == name]
    return found


def stores(plan: Plan) -> dict[str, PlannedResource]:
    return {str(r.inputs["name"]): r for r in plan.custom_resources() if r.type == STORE_TYPE}


def listed(*entries: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return base_settings(dicomStoreId=None, dicomStores=list(entries), **overrides)


# --- the single form is unchanged ---------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_example_stacks_keep_the_urns_of_their_phi_resources(stack: str) -> None:
    urns = {r.urn for r in cached_plan(stack).custom_resources()}
    assert PINNED_URNS[stack] <= urns


def test_the_single_form_store_has_no_alias() -> None:
    (store,) = stores(cached_plan("prod")).values()
    assert store.aliases == []


# --- the list form's names ----------------------------------------------------------------------


def test_listed_stores_are_named_after_their_ids_whatever_their_order() -> None:
    first = plan_of("ab", listed({"id": "a"}, {"id": "b"}))
    reordered = plan_of("cba", listed({"id": "c"}, {"id": "b"}, {"id": "a"}))
    names = {store_id: r.name for store_id, r in stores(first).items()}
    assert names == {"a": "dicom-bq-dicom-store-a", "b": "dicom-bq-dicom-store-b"}
    again = {store_id: r.name for store_id, r in stores(reordered).items()}
    assert {key: again[key] for key in names} == names


def test_converting_a_stack_keeps_its_store_through_an_alias_without_a_change() -> None:
    """prod's store listed first: the engine finds the deployed `dicom-bq-dicom-store` through
    the alias (same parent, same type) and sees the same inputs, so nothing is replaced."""
    prod = read_stack_config(ROOT, "prod", use_cli=False).own()
    converted_raw = {
        key: value
        for key, value in prod.items()
        if key not in ("dicomStoreId", "notificationTopic", "streamTables")
    }
    converted_raw["dicomStores"] = [
        {
            "id": prod["dicomStoreId"],
            "notification": {"pubsubTopic": prod["notificationTopic"]},
            "streamTables": prod["streamTables"],
        },
        {"id": "dicom-prod-research"},
    ]
    converted = plan_of("prod-converted", converted_raw)
    (single,) = stores(cached_plan("prod")).values()
    adopted = stores(converted)["dicom-prod"]
    assert adopted.aliases == [f"name={single.name}"]
    # Same parent and type: the alias (a name only) then spells the deployed store's URN.
    assert adopted.urn.split("::")[2] == single.urn.split("::")[2]
    assert adopted.inputs == single.inputs
    assert stores(converted)["dicom-prod-research"].aliases == []
    # The publisher grant follows its topic in the same way.
    old_grant = resource(cached_plan("prod"), "dicom-bq-agent-notification-topic-publisher")
    new_grant = resource(converted, "dicom-bq-agent-notification-topic-publisher-dicom-prod")
    assert new_grant.aliases == [f"name={old_grant.name}"]
    assert new_grant.inputs == old_grant.inputs


def test_only_the_first_listed_store_adopts_the_single_forms_resource() -> None:
    plan = three_stores()
    aliased = {store_id: r.aliases for store_id, r in stores(plan).items() if r.aliases}
    assert aliased == {"clinical": ["name=dicom-bq-dicom-store"]}


# --- one dataset, one agent, one publisher grant per topic --------------------------------------


def test_three_stores_share_one_dataset_one_agent_and_one_wait() -> None:
    by_type: dict[str, int] = {}
    for r in three_stores().custom_resources():
        by_type[r.type] = by_type.get(r.type, 0) + 1
    assert by_type[STORE_TYPE] == 3
    assert by_type["gcp:healthcare/dataset:Dataset"] == 1
    assert by_type["gcp:bigquery/dataset:Dataset"] == 1
    assert by_type["gcp:projects/serviceIdentity:ServiceIdentity"] == 1
    assert by_type["time:index/sleep:Sleep"] == 1


def test_one_publisher_grant_per_distinct_topic() -> None:
    shared, other = TOPIC.format(name="shared"), TOPIC.format(name="other")
    plan = plan_of(
        "topics",
        listed(
            {"id": "a", "notification": {"pubsubTopic": shared}},
            {"id": "b", "notification": {"pubsubTopic": other}},
            {"id": "c", "notification": {"pubsubTopic": shared}},
        ),
    )
    publishers = {
        r.name: r.inputs["topic"]
        for r in plan.custom_resources()
        if r.type == "gcp:pubsub/topicIAMMember:TopicIAMMember"
    }
    assert publishers == {
        "dicom-bq-agent-notification-topic-publisher-a": shared,
        "dicom-bq-agent-notification-topic-publisher-b": other,
    }
    reasons = {g["scope"]: g["reason"] for g in plan.grants if g["role"].endswith("publisher")}
    assert reasons[f"//pubsub.googleapis.com/{shared}"].startswith("DICOM stores a, c publish")


def test_store_labels_go_over_the_stacks_and_bulk_import_is_passed_on() -> None:
    research = stores(three_stores())["research"]
    assert research.inputs["labels"] == {"env": "test", "team": "research"}
    assert research.inputs["notificationConfig"] == {
        "pubsubTopic": TOPIC.format(name="research-instances"),
        "sendForBulkImport": True,
    }
    # The datasets carry the stack's labels only.
    assert resource(three_stores(), "dicom-bq-bigquery-dataset").inputs["labels"] == {"env": "test"}


# --- deployment order, per store ----------------------------------------------------------------

WAIT = "dicom-bq-agent-iam-propagation"


def test_each_store_deploys_under_googles_rules() -> None:
    assert model.check(three_stores()) == []


@pytest.mark.parametrize(
    ("edge", "rules"),
    [
        (("dicom-bq-dicom-store-clinical", WAIT), {"streaming-store"}),
        (("dicom-bq-dicom-store-research", WAIT), {"notifying-store"}),
        (
            ("dicom-bq-dicom-store-archive", "dicom-bq-dicom-dataset"),
            {"scope-exists", "api-enabled"},
        ),
    ],
)
def test_each_store_waits_for_what_it_needs(edge: tuple[str, str], rules: set[str]) -> None:
    plan = three_stores()
    assert edge in set(model.edges(plan))
    broken = {(v.rule, v.resource) for v in model.check(plan, without=[edge])}
    assert broken == {(rule, edge[0]) for rule in rules}


def test_a_plain_store_does_not_wait_for_grants_it_does_not_need() -> None:
    archive = stores(three_stores())["archive"]
    assert archive.depends_on == ["dicom-bq-dicom-dataset"]


def test_in_a_cmek_dataset_every_store_follows_the_key_grants_wait() -> None:
    key = "projects/kms-proj-0/locations/us-central1/keyRings/ring/cryptoKeys/hc"
    plan = plan_of("three-stores-cmek", three_store_stack(healthcareKmsKey=key))
    # Past Google's typical 2 minutes, only the known gap remains: a CMEK Healthcare dataset has no
    # documented error `up` could recognise and retry (tests/deployment_model.py, worst_case_only).
    violations = model.check(plan)
    assert [v for v in violations if not v.worst_case_only] == []
    assert {v.rule for v in violations} <= {"cmek-healthcare"}
    deployment = model.Deployment(plan)
    for store in stores(plan).values():
        assert deployment.ordered(store.name, "dicom-bq-agent-healthcare-cmek-encrypter", 120)
    broken = {v.rule for v in model.check(plan, without=[("dicom-bq-dicom-dataset", WAIT)])}
    assert broken == {"cmek-healthcare"}


# --- outputs ------------------------------------------------------------------------------------


def test_every_store_is_an_output_and_the_first_keeps_the_single_outputs() -> None:
    outputs = StackOutputs.parse(three_stores().outputs)
    assert [s.store_id for s in outputs.stores] == ["clinical", "research", "archive"]
    prefix = "projects/dicom-src-test/locations/us-central1/datasets/imaging/dicomStores/"
    assert [s.name for s in outputs.stores] == [
        prefix + store for store in ("clinical", "research", "archive")
    ]
    assert outputs.store_name == prefix + "clinical"
    assert outputs.stores[1].dicomweb_url == (
        f"https://healthcare.googleapis.com/v1/{prefix}research/dicomWeb"
    )


def test_outputs_of_a_stack_deployed_before_the_list_read_as_one_store() -> None:
    document = dict(cached_plan("dev").outputs)
    document.pop(OutputNames.STORES)
    (only,) = StackOutputs.parse(document).stores
    assert only.store_id == "dicom-dev"
    assert only.name == document[OutputNames.STORE]


def test_a_store_is_picked_by_id_and_an_unknown_id_names_the_known_ones() -> None:
    outputs = StackOutputs.parse(three_stores().outputs)
    assert [s.store_id for s in outputs.selected_stores("archive")] == ["archive"]
    assert len(outputs.selected_stores()) == 3
    with pytest.raises(DicomBqError, match="its stores are clinical, research, archive"):
        outputs.selected_stores("nope")


def test_a_malformed_stores_output_is_refused() -> None:
    with pytest.raises(DicomBqError, match="dicomStores is not a list of stores"):
        StackOutputs.parse({OutputNames.STORES: [{"id": 1}]})


# --- the stack file: an array of objects, as the engine merges it -------------------------------


def test_a_stack_file_with_a_list_of_stores_is_read_and_planned(tmp_path: Path) -> None:
    for path in ROOT.glob("Pulumi.yaml"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    config = {f"dicom-bq:{k}": v for k, v in three_store_stack().items()}
    (tmp_path / "Pulumi.multi.yaml").write_text(
        yaml.safe_dump({"config": config}), encoding="utf-8"
    )
    stack = read_stack_config(tmp_path, "multi", use_cli=False)
    # Undeclared, the list passes the merge as the engine hands an object to the program: JSON,
    # so a YAML boolean stays a boolean (tests/engine/test_config_engine.py asks the engine).
    assert stack.values["dicom-bq:dicomStores"][1]["notification"]["sendForBulkImport"] is True
    assert stack.values["dicom-bq:dicomStoreId"] == ""  # Pulumi.yaml's default: not set
    plan = plan_stack(stack)
    assert sorted(stores(plan)) == ["archive", "clinical", "research"]
    assert stores(plan)["research"].inputs["notificationConfig"]["sendForBulkImport"] is True


# --- validation ---------------------------------------------------------------------------------

TOO_MANY_LABELS = {f"s{i}": "v" for i in range(60)}
BAD_STORES: list[tuple[str, dict[str, Any], str]] = [
    (
        "both forms",
        base_settings(dicomStores=[{"id": "a"}]),
        "dicom-bq:dicomStoreId and dicom-bq:dicomStores are both set: keep one",
    ),
    ("neither form", base_settings(dicomStoreId=None), "dicom-bq:dicomStoreId is required (or"),
    ("empty list", listed(), "dicom-bq:dicomStores lists no store"),
    (
        "duplicate id",
        listed({"id": "a"}, {"id": "b"}, {"id": "a"}),
        "dicom-bq:dicomStores[2].id 'a' is also the ID of dicomStores[0]",
    ),
    ("bad id", listed({"id": "a"}, {"id": "a b"}), "dicom-bq:dicomStores[1].id = 'a b'"),
    (
        "duplicate stream",
        listed({"id": "a", "streamTables": ["t", "u", "t"]}),
        "dicom-bq:dicomStores[0].streamTables",
    ),
    (
        "six streams",
        listed({"id": "a"}, {"id": "b", "streamTables": [f"t{i}" for i in range(6)]}),
        "dicom-bq:dicomStores[1].streamTables",
    ),
    (
        "bad topic",
        listed({"id": "a", "notification": {"pubsubTopic": "instances"}}),
        "dicom-bq:dicomStores[0].notification.pubsubTopic",
    ),
    (
        "label key uppercase",
        listed({"id": "a", "labels": {"Team": "x"}}),
        "dicom-bq:dicomStores[0].labels",
    ),
    (
        "label value over 128 bytes",
        listed({"id": "a", "labels": {"team": "\u0905" * 50}}),
        "150 UTF-8 bytes",
    ),
    (
        "labels over 64 with the stack's",
        listed({"id": "a", "labels": TOO_MANY_LABELS}, labels={f"k{i}": "v" for i in range(5)}),
        "dicom-bq:dicomStores[0].labels: with the stack's labels the store would carry 65",
    ),
    (
        "stack topic with the list",
        listed({"id": "a"}, notificationTopic=TOPIC.format(name="abc")),
        "dicom-bq:notificationTopic is a setting of each store",
    ),
    (
        "stack streams with the list",
        listed({"id": "a"}, streamTables=["t"]),
        "dicom-bq:streamTables is a setting of each store",
    ),
    ("unknown store field", listed({"id": "a", "topic": "x"}), "dicomStores[0].topic is not a"),
    (
        "ids sharing the snapshot's names",
        listed({"id": "site.a"}, {"id": "b"}, {"id": "site_a"}, snapshotSchedule="0 2 * * *"),
        "dicom-bq:dicomStores[2].id 'site_a' and dicomStores[0].id 'site.a' would share the "
        "snapshot table dicom_snapshot_site_a and the job name dicom-bq-snapshot-",
    ),
    (
        "ids sharing a snapshot table but for case",
        listed({"id": "Site"}, {"id": "site"}, snapshotSchedule="0 2 * * *"),
        "dicom-bq:dicomStores[1].id 'site' and dicomStores[0].id 'Site' would share the "
        "snapshot table dicom_snapshot_site: one store's nightly export",
    ),
    ("not json", {**listed(), "dicomStores": "[{"}, "dicom-bq:dicomStores: '[{' is not a list"),
]


@pytest.mark.parametrize(
    ("raw", "expected"), [pytest.param(raw, text, id=name) for name, raw, text in BAD_STORES]
)
def test_bad_stores_are_refused_naming_the_store(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(raw, "dev")
    assert expected in str(caught.value)


def test_the_missing_store_message_names_the_stack() -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(base_settings(dicomStoreId=None), "prod")
    assert "`pulumi config set dicom-bq:dicomStoreId VALUE --stack prod`" in str(caught.value)


def test_a_valid_list_gives_each_store_its_settings() -> None:
    settings = parse_settings(three_store_stack(), "dev")
    assert [s.store_id for s in settings.stores] == ["clinical", "research", "archive"]
    assert settings.all_stream_tables == ["clinical_stream", "clinical_research"]
    assert settings.notification_topics == [TOPIC.format(name="research-instances")]
    assert settings.store_name.endswith("/dicomStores/clinical")


# --- verify: every store by default, one with --store-id ----------------------------------------

RESEARCH = STORE.rsplit("/", 1)[0] + "/research"


def two_store_outputs(tmp_path: Path) -> Path:
    outputs = {
        OutputNames.STORE: STORE,
        OutputNames.STORES: [
            {"id": "dicom", "name": STORE},
            {"id": "research", "name": RESEARCH},
        ],
        OutputNames.VERIFICATION_TABLE: "bq://dicom-src-test.dicom_metadata.dicom_bq_verification",
        OutputNames.AGENT: "service-111122223333@gcp-sa-healthcare.iam.gserviceaccount.com",
    }
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs), encoding="utf-8")
    return path


def checked_stores(cloud: Cloud) -> list[str]:
    """The stores verify read (GET of the store itself, before seeding a temporary one)."""
    return [
        r.path.removeprefix("/v1/")
        for r in cloud.healthcare.requests
        if r.method == "GET" and r.path.removeprefix("/v1/") in (STORE, RESEARCH)
    ]


def test_verify_checks_every_store_of_the_stack(cloud: Cloud, tmp_path: Path) -> None:
    cloud.healthcare.stores.add(RESEARCH)
    result = runner.invoke(
        app, ["verify", "--outputs", str(two_store_outputs(tmp_path)), "--no-seed", "--json"]
    )
    assert result.exit_code == 0, result.output
    steps = [step["step"] for step in json.loads(result.stdout)["steps"]]
    assert steps[0] == "dicom:store"
    assert "research:store" in steps
    assert list(dict.fromkeys(checked_stores(cloud))) == [STORE, RESEARCH]


def test_verify_store_id_checks_that_store_only(cloud: Cloud, tmp_path: Path) -> None:
    cloud.healthcare.stores.add(RESEARCH)
    result = runner.invoke(
        app,
        [
            "verify",
            "--outputs",
            str(two_store_outputs(tmp_path)),
            "--store-id",
            "research",
            "--no-seed",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"][0]["step"] == "store"
    assert set(checked_stores(cloud)) == {RESEARCH}


def test_verify_store_id_unknown_is_refused_before_any_request(
    cloud: Cloud, tmp_path: Path
) -> None:
    result = runner.invoke(
        app, ["verify", "--outputs", str(two_store_outputs(tmp_path)), "--store-id", "nope"]
    )
    assert result.exit_code == 2
    assert "its stores are dicom, research" in result.output
    assert cloud.healthcare.requests == []


@pytest.mark.parametrize(
    "stores",
    [
        pytest.param({"dicom_store_id": "a", "dicom_stores": [{"store_id": "b"}]}, id="both"),
        pytest.param({}, id="neither"),
        pytest.param({"dicom_stores": []}, id="empty list"),
    ],
)
def test_the_component_takes_exactly_one_form(stores: dict[str, Any]) -> None:
    from dicom_bq.infra.components.export_path import DicomExportPath, DicomExportPathArgs

    args = DicomExportPathArgs(
        source_project="team-project-1",
        source_project_number="111122223333",
        location="us-central1",
        healthcare_dataset_id="imaging",
        bigquery_dataset_id="dicom",
        **stores,  # type: ignore[typeddict-item]
    )
    with pytest.raises(DicomBqError, match="not both and not neither"):
        record_program("forms", {}, lambda: DicomExportPath("dicom", args) and {})


SNAPSHOT_JOB = "gcp:cloudscheduler/job:Job"


def test_ids_differing_only_where_names_replace_characters_are_fine_without_a_snapshot() -> None:
    settings = parse_settings(listed({"id": "site.a"}, {"id": "site_a"}), "dev")
    assert [store.store_id for store in settings.stores] == ["site.a", "site_a"]


def test_every_name_made_from_a_store_id_is_the_stores_own() -> None:
    """Snapshot tables, job names, metric names: one per store, whatever its ID holds."""
    ids = ["site.a", "site-a", "Site_b", "c"]
    plan = plan_of(
        "derived-names",
        listed(
            *({"id": store_id} for store_id in ids),
            snapshotSchedule="0 2 * * *",
            alertEmails=["oncall@example.org"],
        ),
    )
    tables = [entry["snapshotTable"] for entry in plan.outputs[OutputNames.STORES]]
    jobs = [r.inputs["name"] for r in plan.custom_resources() if r.type == SNAPSHOT_JOB]
    metrics = [
        r.inputs["name"] for r in plan.custom_resources() if r.type == "gcp:logging/metric:Metric"
    ]
    assert len({table.casefold() for table in tables}) == len(ids)
    assert len(set(jobs)) == len(ids)
    assert len(set(metrics)) == len(metrics) >= len(ids)


def test_the_component_refuses_ids_that_would_share_the_snapshots_names() -> None:
    """The component is used without the settings (infra/examples/consumer): it checks too."""
    from dicom_bq.infra.components.export_path import DicomExportPath, DicomExportPathArgs

    args = DicomExportPathArgs(
        source_project="team-project-1",
        source_project_number="111122223333",
        location="us-central1",
        healthcare_dataset_id="imaging",
        bigquery_dataset_id="dicom",
        dicom_stores=[{"store_id": "site.a"}, {"store_id": "site_a"}],
        snapshot_schedule="0 2 * * *",
    )
    with pytest.raises(DicomBqError) as raised:
        record_program("shared", {}, lambda: DicomExportPath("dicom", args) and {})
    assert (
        "dicom_stores[1] store_id 'site_a' and dicom_stores[0] store_id 'site.a' would share the "
        "snapshot table dicom_snapshot_site_a and the job name dicom-bq-snapshot-"
    ) in raised.value.message
