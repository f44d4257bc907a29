"""Every scenario under features/ (each tagged with the acceptance criterion it restates)."""

from pytest_bdd import scenarios

scenarios("../../features")
