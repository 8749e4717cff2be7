"""Claim: MRE needs "10-40% fewer training epochs than MoE baselines at comparable or higher accuracy".

Measured per data set against the Switch-balanced top-1 MoE and the threshold
MoE, pairing runs by seed, in two ways. Epochs to target: the first epoch whose
validation accuracy reaches `target_fraction` of the baseline's mean best
validation accuracy. A run that never reaches it counts at its last epoch.
Epochs to convergence: the last improving epoch under early stopping with
`patience` and `min_delta`. The estimate is the reduction
1 - mean(MRE epochs) / mean(baseline epochs). The claim is reproduced when its
bootstrap interval over seeds lies at or above `min_reduction` (10%).
"""

import pytest


@pytest.mark.claim("epoch-reduction")
def test_fewer_epochs_to_target(claim_record, check_claim):
    check_claim(claim_record)


@pytest.mark.claim("epoch-convergence")
def test_fewer_epochs_to_convergence(claim_record, check_claim):
    check_claim(claim_record)
