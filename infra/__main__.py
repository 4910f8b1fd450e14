"""The Pulumi program: settings -> component -> exports."""

from infra.program import define_stack, load_settings

define_stack(load_settings())
