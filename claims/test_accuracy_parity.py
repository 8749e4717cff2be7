"""Claim: MRE trains in fewer epochs than MoE baselines "at comparable or higher accuracy".

Measured per data set as the mean paired difference of final test accuracy,
MRE minus baseline (Switch-balanced top-1 MoE, threshold MoE), over seeds. The
claim is reproduced as non-inferiority: the bootstrap interval of the
difference lies at or above minus `non_inferiority_margin` (1 percentage point).
"""

import pytest


@pytest.mark.claim("accuracy-parity")
def test_accuracy_not_lower(claim_record, check_claim):
    check_claim(claim_record)
