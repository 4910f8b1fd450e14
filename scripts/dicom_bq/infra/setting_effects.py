"""Where each stack setting acts: one entry per `dicom-bq:*` key of StackSettings.

A key can act in four places:
- the component: arguments of DicomExportPath (infra/program.py component_args maps the key
  to them), so the resources `pulumi up` creates change;
- the offline plan: what `dicom-bq plan` answers in Google's place (stack/plan.py's mock:
  project numbers, the service agents' and BigQuery encryption account's addresses), which the
  real program takes from Google at deploy time;
- the policy config: properties of the CrossGuard pack's config (infra/policy_config.py,
  written by `dicom-bq up`) and of `plan --check`'s context;
- the CLI: a named behaviour of a command that reads the stack's settings.

tests/test_every_setting_acts.py sets each key in turn to a valid non-default value and fails
unless every place declared here changes; a key of the settings model without an entry, or an
entry for no key, fails it too. A new setting is declared here with the place it acts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CliBehaviour(StrEnum):
    """Behaviours of commands that read a stack's settings (value: what changes, and where)."""

    EXPORT_FILTER_BUCKET = (
        "export --filter-file --stack: the bucket the filter file is uploaded to "
        "(flows/export.py filter_bucket)"
    )
    EXPORT_UNIVERSE = (
        "export --stack: the universe, so the endpoints, its clients connect to "
        "(flows/export.py run_export)"
    )


@dataclass(frozen=True)
class SettingEffect:
    """Where one key acts; at least one place."""

    component_args: tuple[str, ...] = ()
    """DicomExportPathArgs keys that the setting changes."""
    offline_plan: bool = False
    """The offline plan's stand-in for Google's answers changes (addresses, project numbers)."""
    policy_config: tuple[str, ...] = ()
    """Properties of the policy pack's config (infra/policy_config.py) that the setting sets."""
    cli: tuple[CliBehaviour, ...] = ()
    passed_unused: tuple[str, ...] = ()
    """DicomExportPathArgs keys the setting is passed on to but the component does not act on
    (it takes from Google what they would say); a place only when listed elsewhere too."""

    @property
    def places(self) -> list[str]:
        return [
            *(["component"] if self.component_args else []),
            *(["offline plan"] if self.offline_plan else []),
            *(["policy config"] if self.policy_config else []),
            *(["cli"] if self.cli else []),
        ]


def _component(*args: str) -> SettingEffect:
    return SettingEffect(component_args=args)


# Keyed by the config key (camelCase, as in Pulumi.<stack>.yaml).
SETTING_EFFECTS: dict[str, SettingEffect] = {
    # Without destinationProject, BigQuery's project is the source project.
    "sourceProject": _component("source_project", "bigquery_project"),
    # Without bigqueryLocation, BigQuery's location is the Healthcare one.
    "location": _component("location", "bigquery_location"),
    "healthcareDatasetId": _component("healthcare_dataset_id"),
    "dicomStoreId": _component("dicom_store_id"),
    # The listed form replaces the single store's arguments.
    "dicomStores": _component("dicom_stores", "dicom_store_id", "stream_tables"),
    "bigqueryDatasetId": _component("bigquery_dataset_id"),
    # The component checks it against Google's before any grant; offline it names the agent.
    "sourceProjectNumber": SettingEffect(
        component_args=("source_project_number",), offline_plan=True
    ),
    "destinationProject": _component("bigquery_project"),
    # BigQuery's encryption account, offline; the program asks BigQuery for it.
    "destinationProjectNumber": SettingEffect(offline_plan=True),
    "timeZone": _component("time_zone"),
    "labels": _component("labels"),
    "notificationTopic": _component("notification_topic"),
    "streamTables": _component("stream_tables"),
    "bigqueryLocation": _component("bigquery_location"),
    "healthcareKmsKey": _component("healthcare_kms_key"),
    "bigqueryKmsKey": _component("bigquery_kms_key"),
    "filterBucket": SettingEffect(
        component_args=("filter_bucket",), cli=(CliBehaviour.EXPORT_FILTER_BUCKET,)
    ),
    "protected": SettingEffect(component_args=("protected",), policy_config=("protected",)),
    "retainOnDelete": _component("retain_on_delete"),
    "iamPropagationWait": _component("iam_propagation_wait_seconds"),
    "dataEditorScope": _component("data_editor_scope"),
    "allowedBigqueryLocations": SettingEffect(policy_config=("allowedBigqueryLocations",)),
    "requireCmek": SettingEffect(policy_config=("requireCmek",)),
    "universeDomain": SettingEffect(
        component_args=("universe_domain",),
        offline_plan=True,
        cli=(CliBehaviour.EXPORT_UNIVERSE,),
    ),
    # The component takes the agent's address from Google; the offline plan shows it with this.
    "agentIamDomain": SettingEffect(offline_plan=True, passed_unused=("agent_iam_domain",)),
    "alertEmails": _component("alert_emails"),
    "alertChannels": _component("alert_channels"),
    "snapshotSchedule": _component("snapshot_schedule"),
    "snapshotTimeZone": _component("snapshot_time_zone"),
    "snapshotTable": _component("snapshot_table"),
    "snapshotRegion": _component("snapshot_region"),
}


def declaration_problems(keys: list[str]) -> list[str]:
    """Keys of the settings model without an entry, entries for no key, entries with no place."""
    problems = [
        f"dicom-bq:{key} has no entry in SETTING_EFFECTS: declare where it acts"
        for key in keys
        if key not in SETTING_EFFECTS
    ]
    problems += [
        f"SETTING_EFFECTS[{key!r}] names no setting of StackSettings"
        for key in SETTING_EFFECTS
        if key not in keys
    ]
    problems += [
        f"SETTING_EFFECTS[{key!r}] declares no place"
        for key, effect in SETTING_EFFECTS.items()
        if not effect.places
    ]
    return problems
