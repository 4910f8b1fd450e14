"""The Pulumi program: settings -> component -> exports."""

from dicom_bq.infra.program import define_stack, load_settings

define_stack(load_settings())
