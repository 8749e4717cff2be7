"""Claim: "harder samples use more experts".

Measured three ways. Per sample: for each MRE seed, the Spearman correlation
between a test sample's difficulty (the dense baseline's test loss, mean over
its seeds) and the experts the MRE fired for it. The mean over seeds must have
a bootstrap interval above `min_spearman` (0). Misclassified against correct
samples: the rank-biserial effect of a Mann-Whitney test of activations per
seed, whose mean over seeds must have an interval above 0. Across data sets
(paper profile only): mean experts per sample ordered CIFAR-10 >
Fashion-MNIST > MNIST, with adjacent intervals not overlapping. An MRE that
fires the same number of experts for every sample does not reproduce the claim.
"""

import pytest


@pytest.mark.claim("harder-samples")
def test_difficulty_correlates_with_experts(claim_record, check_claim):
    check_claim(claim_record)


@pytest.mark.claim("misclassified-more-experts")
def test_misclassified_samples_use_more_experts(claim_record, check_claim):
    check_claim(claim_record)


@pytest.mark.claim("cross-dataset-order")
def test_harder_datasets_use_more_experts(claim_record, check_claim):
    check_claim(claim_record)
