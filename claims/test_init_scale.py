"""Claim: "the sqrt(N_e + 1) router init (N_e = 8 experts) matters" (router weights scaled by 3 at initialisation).

Measured against the same MRE with router init scale 1, paired by seed. The
normalised entropy of expert usage in the first training epoch must be higher
with sqrt(N_e + 1): the bootstrap interval of the paired difference lies above
0. Its final test accuracy must not be lower by more than `accuracy_margin`
(1 percentage point). Every init scale of the grid is recorded for the
ablation figure.
"""

import pytest


@pytest.mark.claim("init-scale")
def test_scaled_router_init_spreads_usage(claim_record, check_claim):
    check_claim(claim_record)
