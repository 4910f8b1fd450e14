"""Entry point for `pulumi preview --policy-pack policy`."""

import sys
from pathlib import Path

# The pack runs from policy/ in its own virtualenv; the rules live in the project's infra package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import PolicyPack

from policy.pack import PACK_NAME, policies

PolicyPack(name=PACK_NAME, policies=policies())
