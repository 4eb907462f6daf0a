"""Quota model and ledger: guarantees, borrowing, lending, cohorts (DESIGN invariant 3)."""

import pytest

from gpuplane.domain.errors import InvalidInput
from gpuplane.domain.tenancy import FlavorQuota, Project, QuotaTree, gpu_units
from gpuplane.scheduling.admission.quota import QuotaFit, QuotaLedger


def tree(*projects, enforce=True):
    return QuotaTree(projects, enforce=enforce)


def proj(name, g, cohort="c", borrow=None, lend=None, flavor="gpu"):
    return Project(name, cohort=cohort, quotas={flavor: FlavorQuota(g * 1000, borrow, lend)})


@pytest.mark.parametrize("gpus,milli,mig,units", [
    (1, 1000, None, 1000), (4, 1000, None, 4000), (1, 250, None, 250),
    (1, 1000, "7g.80gb", 1000), (1, 1000, "3g.40gb", 429), (1, 1000, "1g.10gb", 143),
], ids=["one whole GPU", "four whole GPUs", "a quarter share", "7g weighs a GPU",
        "3g weighs 3/7", "1g weighs 1/7 rounded up"])
def test_gpu_units_weigh_what_they_use(gpus, milli, mig, units):
    assert gpu_units(gpus, milli, mig) == units


def test_unknown_mig_profile_names_the_field():
    with pytest.raises(InvalidInput) as e:
        gpu_units(1, 1000, "big")
    assert e.value.errors[0].loc == "mig_profile"


def test_invalid_tree_lists_every_problem():
    with pytest.raises(InvalidInput) as e:
        QuotaTree([Project("a", weight=0, quotas={"gpu": FlavorQuota(-1)}),
                   Project("a"), Project("b", quotas={"gpu": FlavorQuota(1, borrowing_limit=5)})])
    locs = [x.loc for x in e.value.errors]
    assert "projects[0].weight" in locs
    assert "projects[0].quotas[gpu].guaranteed" in locs
    assert "projects[1].name" in locs
    assert "projects[2].quotas[gpu]" in locs
    assert e.value.code == "gpuplane.quota.invalid"


def test_within_guarantee_then_borrowing_then_cohort_full():
    led = QuotaLedger(tree(proj("a", 4), proj("b", 4)))
    assert led.check("a", "gpu", 4000).fit is QuotaFit.GUARANTEED
    led.add("a", "gpu", 4000)
    assert led.check("a", "gpu", 4000).fit is QuotaFit.BORROWING
    led.add("a", "gpu", 4000)
    assert led.borrowed("a", "gpu") == 4000
    assert led.check("a", "gpu", 1000).fit is QuotaFit.COHORT_FULL


def test_owner_returning_must_reclaim_what_was_lent():
    led = QuotaLedger(tree(proj("a", 4), proj("b", 4)))
    led.add("a", "gpu", 8000)          # a borrowed all of b's guarantee
    chk = led.check("b", "gpu", 3000)
    assert chk.fit is QuotaFit.RECLAIM
    assert chk.reclaim == 3000


def test_borrowing_limit_caps_the_ceiling():
    led = QuotaLedger(tree(proj("a", 4, borrow=2000), proj("b", 4)))
    led.add("a", "gpu", 6000)
    chk = led.check("a", "gpu", 1000)
    assert chk.fit is QuotaFit.OVER_LIMIT
    assert chk.ceiling == 6000


def test_lending_limit_keeps_part_of_a_guarantee_private():
    led = QuotaLedger(tree(proj("a", 4), proj("b", 4, lend=1000)))
    led.add("a", "gpu", 4000)
    assert led.check("a", "gpu", 1000).fit is QuotaFit.BORROWING
    led.add("a", "gpu", 1000)
    assert led.check("a", "gpu", 1000).fit is QuotaFit.COHORT_FULL
    assert led.check("b", "gpu", 3000).fit is QuotaFit.GUARANTEED   # the private part is free


def test_project_without_cohort_never_exceeds_its_guarantee():
    led = QuotaLedger(tree(proj("a", 2, cohort=None)))
    assert led.check("a", "gpu", 2000).fit is QuotaFit.GUARANTEED
    assert led.check("a", "gpu", 3000).fit is QuotaFit.OVER_LIMIT


def test_no_enforcement_admits_everything():
    led = QuotaLedger(tree(proj("a", 0), enforce=False))
    assert led.check("a", "gpu", 10**9).fit.admissible


def test_scaled_tree_scales_every_limit():
    t = tree(proj("a", 8, borrow=4000, lend=2000)).scaled(0.25)
    q = t.project("a").quota("gpu")
    assert (q.guaranteed, q.borrowing_limit, q.lending_limit) == (2000, 1000, 500)


def test_violations_report_a_broken_ceiling():
    led = QuotaLedger(tree(proj("a", 1, cohort=None)))
    led.add("a", "gpu", 2000)           # only a buggy caller would do this
    assert led.violations() == ["a/gpu: 2000 > ceiling 1000"]
