"""``sectorkit demo``: every built-in domain has a demo experiment that composes and says why it was chosen."""

from __future__ import annotations

import pytest
from sectorkit.core.config import validate_overrides
from sectorkit.core.registry import discover, get_domain
from sectorkit.core.summary import demo_experiment, experiment_note

BUILT_IN = ("agriculture", "finance", "healthcare", "retail")


@pytest.mark.parametrize("name", BUILT_IN)
def test_each_domain_has_a_demo_experiment_that_composes_and_explains_itself(name: str) -> None:
    domain = get_domain(name)
    assert demo_experiment(domain) == "demo"
    validate_overrides(domain, [f"domain={name}", "experiment=demo"])
    note = experiment_note(domain, "demo")
    assert note.startswith(f"What `sectorkit demo` runs for {name}:") and "\n" not in note and "@package" not in note


def test_a_domain_without_demo_falls_back_to_quick() -> None:
    class Stub:
        def options(self, group: str) -> list[str]:
            return ["quick", "yield"]

    assert demo_experiment(Stub()) == "quick"
    assert set(BUILT_IN) <= set(discover())
