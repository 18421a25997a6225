"""conf/local/credentials.yml.template, copied to credentials.yml, reaches the S3 datasets.

S3 is moto's server on 127.0.0.1. No AWS credential is in the environment, in a profile or on
an instance: the keys are only in the copied credentials file, so a dataset that reads or
writes proves that the file's names are the ones s3fs takes (the same file with null values
finds no credential). boto3's names, what the template used to say, are not s3fs arguments.
"""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from kedro.config import OmegaConfigLoader

from eyecatcher.settings import CONFIG_LOADER_ARGS

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "conf" / "local" / "credentials.yml.template"
BUCKET = "eyecatcher-credentials"
KEYS = {"key": "AKIDFROMFILEONLY", "secret": "secret-from-file-only"}
ENV = "s3"


@pytest.fixture
def moto_without_env_credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 on 127.0.0.1 with no credential anywhere but what a test passes explicitly.

    Unlike tests/conftest.py's ``moto_s3``, no AWS_ACCESS_KEY_ID is set: the autouse
    ``_no_real_aws`` fixture has already removed the environment's and pointed the config files
    at /dev/null. The endpoint (not a secret) comes from AWS_ENDPOINT_URL, as for a user.
    """
    import boto3
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10
        ).close()
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        boto3.client(
            "s3",
            aws_access_key_id=KEYS["key"],
            aws_secret_access_key=KEYS["secret"],
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)
        s3fs.S3FileSystem.clear_instance_cache()
        yield endpoint
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def _project(tmp_path: Path, credentials: dict[str, Any]) -> Path:
    """conf/base and conf/s3 of the repository; the s3 env's credentials.yml and one catalog
    entry of base (``image_labels``) that names them."""
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf" / "base", conf / "base")
    shutil.copytree(REPO / "conf" / "s3", conf / ENV)
    (conf / ENV / "credentials.yml").write_text(yaml.safe_dump(credentials))
    entry = yaml.safe_load((REPO / "conf" / "base" / "catalog_labelling.yml").read_text())[
        "image_labels"
    ]
    entry["credentials"] = "aws"
    (conf / ENV / "catalog_credentials.yml").write_text(yaml.safe_dump({"image_labels": entry}))
    return conf


def _catalog(conf: Path, monkeypatch: pytest.MonkeyPatch):
    from kedro.io import DataCatalog

    monkeypatch.setenv("EYECATCHER_S3_PREFIX", f"s3://{BUCKET}/eyecatcher")
    loader = OmegaConfigLoader(
        conf_source=str(conf), env=ENV, **{**CONFIG_LOADER_ARGS, "default_run_env": ENV}
    )
    return DataCatalog.from_config(loader["catalog"], loader["credentials"])


def _template_with(values: dict[str, str]) -> dict[str, Any]:
    """The template's ``aws`` block with literal values in place of ``${oc.env:...}``."""
    template = yaml.safe_load(TEMPLATE.read_text())
    return {"aws": {name: values.get(name) for name in template["aws"]}}


def test_template_names_are_the_ones_s3fs_takes() -> None:
    import inspect

    import s3fs
    from aiobotocore.session import AioSession

    template = yaml.safe_load(TEMPLATE.read_text())
    # s3fs hands the keyword arguments it does not name (``profile``) to aiobotocore's session.
    accepted = set(inspect.signature(s3fs.S3FileSystem.__init__).parameters) | set(
        inspect.signature(AioSession.__init__).parameters
    )
    assert set(template["aws"]) <= accepted, set(template["aws"]) - accepted
    assert {"key", "secret", "token"} <= set(template["aws"])


def test_template_reads_its_values_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copied verbatim, the template resolves the standard AWS variables into s3fs's names."""
    (tmp_path / "base").mkdir()
    (tmp_path / "local").mkdir()
    shutil.copy2(TEMPLATE, tmp_path / "local" / "credentials.yml")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-env")
    loader = OmegaConfigLoader(conf_source=str(tmp_path), **CONFIG_LOADER_ARGS)
    assert loader["credentials"]["aws"] == {
        "key": "AKIDFROMENV",
        "secret": "secret-from-env",
        "token": None,
        "profile": None,
    }


def test_copied_template_with_keys_only_in_the_file_reaches_an_s3_dataset(
    moto_without_env_credentials: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    catalog = _catalog(_project(tmp_path, _template_with(KEYS)), monkeypatch)
    labels = pd.DataFrame({"sha256": ["a" * 64], "label": ["safe"]})
    catalog.save("image_labels", labels)
    pd.testing.assert_frame_equal(catalog.load("image_labels"), labels)

    s3 = boto3.client(
        "s3",
        aws_access_key_id=KEYS["key"],
        aws_secret_access_key=KEYS["secret"],
        region_name="us-east-1",
    )
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="eyecatcher/03_primary/")
    assert [o["Key"] for o in listed["Contents"]] == ["eyecatcher/03_primary/image_labels.parquet"]


def test_without_the_keys_in_the_file_no_credential_is_found(
    moto_without_env_credentials: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What makes the test above meaningful: nothing but the file holds a credential."""
    catalog = _catalog(_project(tmp_path, _template_with({})), monkeypatch)
    with pytest.raises(Exception, match=r"Unable to locate credentials"):
        catalog.save("image_labels", pd.DataFrame({"sha256": ["a" * 64], "label": ["safe"]}))


def test_boto3_names_are_not_s3fs_arguments(
    moto_without_env_credentials: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old template's names: s3fs hands them to aiobotocore's session, which refuses them."""
    boto3_names = {
        "aws": {"aws_access_key_id": KEYS["key"], "aws_secret_access_key": KEYS["secret"]}
    }
    catalog = _catalog(_project(tmp_path, boto3_names), monkeypatch)
    with pytest.raises(Exception, match=r"unexpected keyword argument 'aws_access_key_id'"):
        catalog.save("image_labels", pd.DataFrame({"sha256": ["a" * 64], "label": ["safe"]}))
