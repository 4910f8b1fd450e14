"""Entry point for `pulumi preview --policy-pack policy`.

Pulumi runs this file from policy/ in the pack's own virtualenv (.venv-policy), where
scripts/bootstrap.sh installed dicom_bq without its dependencies: `pack` is this folder's module,
the rules are dicom_bq.infra.policy_rules. No sys.path edits.
"""

from pack import PACK_NAME, policies
from pulumi_policy import PolicyPack

PolicyPack(name=PACK_NAME, policies=policies())
