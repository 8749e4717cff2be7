"""Claim: with MRE "a prediction exists at every step", more accurate as computation cycles through the experts.

Measured on the final MRE's test accuracy at every routing step, each step
run to its end. The claim is reproduced when the paired difference last step minus
first step has a bootstrap interval over seeds above 0, and no step's mean
accuracy is below the previous step's by more than `step_drop_margin`.
"""

import pytest


@pytest.mark.claim("anytime")
def test_accuracy_rises_with_steps(claim_record, check_claim):
    check_claim(claim_record)
