"""One short training run on a subset of the real Fashion-MNIST."""

import pytest

from mre_repro import data
from mre_repro.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from mre_repro.engine import DataOptions, train_run
from mre_repro.store import RunStore

DEBIAN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.slow,
    pytest.mark.skipif(
        not all((data.DEBIAN_FASHION_MNIST / name).is_file() for name in DEBIAN_FILES),
        reason=f"real Fashion-MNIST not found in {data.DEBIAN_FASHION_MNIST}; apt-get install dataset-fashion-mnist",
    ),
]


def test_one_epoch_on_real_subset(tmp_path):
    config = RunConfig(
        data=DataConfig(dataset="fashion-mnist", train_limit=6000, test_limit=2000),
        model=ModelConfig(kind="mre", width=32, expert_hidden=32),
        train=TrainConfig(epochs=1, seed=0),
    )
    result = train_run(config, RunStore(tmp_path / "store"), DataOptions(data_root=tmp_path / "data"), progress=False)

    # Ten balanced classes: chance is 10%. One epoch on 6,000 images reaches
    # well above 60% with any working model.
    assert result.final["test_accuracy"] > 0.6
    assert 0 < result.final["experts_per_sample"] <= config.model.experts * config.model.steps
    assert len(result.per_sample["correct"]) == 2000
    assert result.provenance["data_files"].keys() == {name.removesuffix(".gz") for name in DEBIAN_FILES}
