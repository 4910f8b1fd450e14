"""Resource options for resources that hold patient data."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi


def phi_options(
    parent: pulumi.Resource,
    protected: bool,
    retain_on_delete: bool,
    depends_on: Sequence[pulumi.Resource] = (),
) -> pulumi.ResourceOptions:
    """In a protected stack, Pulumi refuses to delete or replace these until unprotected."""
    return pulumi.ResourceOptions(
        parent=parent,
        protect=protected,
        retain_on_delete=retain_on_delete,
        depends_on=list(depends_on),
    )
