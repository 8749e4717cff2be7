"""Claim: for MRE "no load-balancing loss is needed": it uses its experts evenly without one.

Measured on the final model's test-set usage: the share of each step's
activations taken by each expert, its normalised entropy (1 = uniform)
averaged over steps, per seed. The claim is reproduced when the bootstrap interval of
the MRE's mean entropy lies at or above `entropy_floor` (0.9) and the paired
difference MRE minus the top-1 MoE trained with the Switch load-balancing
loss lies at or above minus `margin`. The unbalanced top-1 MoE and the dead
experts (below `dead_share` of a step) are recorded for the figures.
"""

import pytest


@pytest.mark.claim("load-balance")
def test_balanced_without_balance_loss(claim_record, check_claim):
    check_claim(claim_record)
