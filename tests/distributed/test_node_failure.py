"""A real two-node Ray cluster on 127.0.0.1 that loses its worker node in the middle of a job.

``ray.cluster_utils.Cluster`` starts a head and a worker node as separate Ray nodes (their own
raylets and object stores), ``RAY_ADDRESS`` points the code at it as an operator would, and the
worker node is killed without grace (``allow_graceful=False``: its raylet and every worker
process on it get SIGKILL) once the job has returned its first batch. Batch scoring and feature
extraction must still account for every image exactly once, give the local engine's answers,
and say how many batches were sent again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from eyecatcher.distributed import feature_extraction
from eyecatcher.distributed.actors import PoolReport
from eyecatcher.features.cache import BackboneKey, backbone_fingerprint
from eyecatcher.features.compute import compute_features
from eyecatcher.features.views import training_views
from eyecatcher.images import sha256_bytes
from eyecatcher.models.factory import create_classifier
from eyecatcher.pipelines.batch_scoring import ray_engine
from eyecatcher.pipelines.batch_scoring.nodes import list_images_to_score, score_images
from eyecatcher.pipelines.batch_scoring.ray_engine import RegistryChampionScorer, score_with_ray
from eyecatcher.pipelines.batch_scoring.settings import BatchScoringSettings
from eyecatcher.preprocessing import data_config_for
from eyecatcher.registry.resolve import resolve_champion
from tests.image_factory import good_images
from tests.pipelines.serving.tiny_champion import MODEL_NAME, TinyRegistry, tiny_registry

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")

pytestmark = [pytest.mark.ray_cluster, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
#: Node death is noticed by the head's health checks; Ray's defaults (a check every 3 s, dead
#: after 5 missed) would add ~15 s per test. The code under test does not depend on them.
FAST_HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 4,
}
PARAMS = {
    "model_name": MODEL_NAME,
    "alias": "champion",
    "recursive": True,
    "extensions": [".jpg"],
    "batch_size": 2,
    "storage_options": {},
    "engine": "ray",
    "ray": {"workers": 2, "max_restarts": 2, "replace_timeout_s": 60},
}


@pytest.fixture
def two_nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """A head (1 CPU) and a worker node (1 CPU) on 127.0.0.1; ``RAY_ADDRESS`` names the head."""
    from ray.cluster_utils import Cluster

    # Ray replaces 127.0.0.1 by the machine's outward address (to be reachable from other
    # machines) unless told this is a one-machine cluster: here, and in the nodes it starts.
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
    # The worker processes inherit this environment: the test's slow scorer must import there.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
            "_system_config": FAST_HEALTH_CHECKS,
        },
    )
    worker = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    try:
        yield cluster, worker
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyRegistry]:
    with tiny_registry(tmp_path_factory.mktemp("cluster-registry")) as created:
        yield created


@pytest.fixture(scope="module")
def champion(registry: TinyRegistry) -> dict:
    return resolve_champion(PARAMS)


def _on_node(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the id of the node that computed it (the engines drop the column)."""
    time.sleep(0.5)  # slow enough that the job outlives the node's removal
    return frame.assign(node_id=ray.get_runtime_context().get_node_id())


class SlowScorer(RegistryChampionScorer):
    """The real scorer, slowed down, saying which node scored each batch."""

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return _on_node(super().__call__(batch))


class _SlowFeatureWorker(feature_extraction.FeatureWorker):
    """The real feature worker, slowed down, saying which node computed each batch."""

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return _on_node(super().__call__(batch))


def _killing_worker_node(module: Any, cluster: Any, worker: Any, reports: list[PoolReport]) -> Any:
    """``module.run_on_actor_pool`` that kills the worker node when its first batch is back.

    The actor there is then given the next batch: that batch is lost with the node, which is
    what the driver must notice and redo. The pool's report is appended to ``reports``.
    """
    original = module.run_on_actor_pool

    def wrapped(batches, actor_cls, actor_kwargs, settings, report=None):
        reports.append(report if report is not None else PoolReport())
        removed = False
        for index, frame in original(batches, actor_cls, actor_kwargs, settings, reports[-1]):
            if not removed and frame["node_id"].iloc[0] == worker.node_id:
                cluster.remove_node(worker, allow_graceful=False)
                removed = True
            yield index, frame
        assert removed, "no batch ran on the worker node: the test proves nothing"

    return wrapped


def _two_nodes_used(nodes_before: list[dict]) -> None:
    alive = [n for n in nodes_before if n["Alive"]]
    assert len(alive) == 2, "the cluster did not start with two nodes: the test proves nothing"


def test_batch_scoring_survives_losing_the_worker_node(
    two_nodes: tuple,
    champion: dict,
    registry: TinyRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster, worker = two_nodes
    root = tmp_path / "incoming"
    root.mkdir()
    for i in range(24):
        (root / f"img-{i:02d}.jpg").write_bytes(good_images(seed=300 + i)["rgb.jpg"])
    params = {**PARAMS, "source": str(root)}
    paths = list_images_to_score(params)["path"].tolist()
    ray.init(address=cluster.address, log_to_driver=False)
    _two_nodes_used(ray.nodes())
    reports: list[PoolReport] = []
    monkeypatch.setattr(
        ray_engine, "run_on_actor_pool", _killing_worker_node(ray_engine, cluster, worker, reports)
    )
    settings = BatchScoringSettings.parse(params)
    table, report = score_with_ray(paths, champion, settings, scorer_cls=SlowScorer)
    assert reports == [report]
    assert len([n for n in ray.nodes() if n["Alive"]]) == 1  # the worker node is gone
    ray.shutdown()
    # Every image exactly once, in the listing's order, with the local engine's verdicts.
    assert table["path"].tolist() == paths
    local, _ = score_images(pd.DataFrame({"path": paths}), champion, {**params, "engine": "local"})
    assert table["decision"].tolist() == local["decision"].tolist()
    assert table["sha256"].tolist() == local["sha256"].tolist()
    np.testing.assert_allclose(
        table["unsafe_score"].to_numpy(float), local["unsafe_score"].to_numpy(float), atol=1e-5
    )
    # The batch that was running on the lost node was sent again, and the report says so.
    assert report.retried_batches >= 1 and report.lost_actors >= 1
    assert report.retried_rows == report.retried_batches * PARAMS["batch_size"]
    assert report.seconds_lost > 0 and len(report.failures) >= 1


def test_feature_extraction_survives_losing_the_worker_node(
    two_nodes: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster, worker = two_nodes
    torch.manual_seed(3)
    model, source = create_classifier("test_resnet", 3, "random")
    model.eval()
    data_config = data_config_for(model, 64)
    backbone = BackboneKey("test_resnet", source, 3, backbone_fingerprint(model), data_config)
    images = []
    for i in range(24):
        data = good_images(seed=400 + i)["rgb.jpg"]
        path = tmp_path / f"img-{i:02d}.jpg"
        path.write_bytes(data)
        images.append((sha256_bytes(data), str(path)))
    views = training_views(1, {}, seed=0)
    expected, _ = compute_features(model, backbone, images, views, cache=None)

    reports: list[PoolReport] = []
    monkeypatch.setattr(
        feature_extraction,
        "run_on_actor_pool",
        _killing_worker_node(feature_extraction, cluster, worker, reports),
    )
    monkeypatch.setattr(feature_extraction, "FeatureWorker", _SlowFeatureWorker)
    features, stats = compute_features(
        model, backbone, images, views, cache=None, engine="ray", workers=2, batch_size=2
    )
    assert stats.misses == len(images)  # every image exactly once
    for name in expected:
        np.testing.assert_allclose(features[name], expected[name], atol=1e-5)
    (report,) = reports
    assert report.retried_batches >= 1 and report.lost_actors >= 1
