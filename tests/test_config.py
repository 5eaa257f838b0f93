"""Config: unknown keys fail loudly, defaults are the documented ones, lists are normalised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest

from filestore_fastapi import (
    AzureStorage,
    Config,
    GCSStorage,
    LocalStorage,
    MemoryStorage,
    S3Storage,
    UploadContext,
)

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("destinaton", "destination"),
        ("max_filesize", "max_file_size"),
        ("allowed_extension", "allowed_extensions"),
        ("base_uri", "base_url"),
        ("overwrites", "overwrite"),
        ("filter", "filters"),
    ],
)
def test_misspelled_key_raises_naming_it_and_the_likely_key(key: str, suggestion: str) -> None:
    with pytest.raises(TypeError) as caught:
        Config(**{key: "x"})
    assert repr(key) in str(caught.value)
    assert repr(suggestion) in str(caught.value)


def test_unknown_key_with_no_near_match_still_names_the_key() -> None:
    with pytest.raises(TypeError, match="'zzz_qqq'"):
        Config(destination="uploads", zzz_qqq=1)


def test_defaults() -> None:
    config = Config()
    assert config.destination == "."
    assert config.base_url is None
    assert config.overwrite is False
    assert config.chunk_size == MiB
    assert config.sanitize_filename is True
    assert config.max_file_size is None
    assert config.min_file_size is None
    assert config.allowed_extensions is None
    assert config.allowed_content_types is None
    assert config.max_body_size is None
    assert (config.max_fields, config.max_field_size, config.max_parts) == (1000, MiB, 1000)
    assert (config.filename, config.filters, config.metadata) == (None, None, None)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["pdf", ".PNG", ".Jpg", "TXT"], (".pdf", ".png", ".jpg", ".txt")),
        ("pdf", (".pdf",)),
        ((".tar.gz",), (".tar.gz",)),
        ([], ()),
    ],
)
def test_extensions_are_lowercased_with_one_leading_dot(given: Any, expected: tuple[str, ...]) -> None:
    assert Config(allowed_extensions=given).allowed_extensions == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["Image/PNG", " application/pdf ", "image/*"], ("image/png", "application/pdf", "image/*")),
        ("text/plain", ("text/plain",)),
    ],
)
def test_content_types_are_lowercased_and_stripped(given: Any, expected: tuple[str, ...]) -> None:
    assert Config(allowed_content_types=given).allowed_content_types == expected


def test_destination_takes_a_string_a_path_or_a_callable() -> None:
    def per_user(context: UploadContext) -> str:
        return f"uploads/{context.form.get('user', 'anonymous')}"

    assert Config(destination="uploads").destination == "uploads"
    assert Config(destination=Path("uploads")).destination == Path("uploads")
    assert Config(destination=per_user).destination is per_user


@pytest.mark.parametrize(
    "keys",
    [
        {"chunk_size": 0},
        {"max_file_size": -1},
        {"min_file_size": -1},
        {"max_body_size": -5},
        {"max_fields": -1},
        {"overwrite": "sometimes"},
    ],
)
def test_invalid_values_raise_at_construction(keys: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        Config(**keys)
    assert next(iter(keys)) in str(caught.value)


def test_config_is_immutable() -> None:
    config = Config(destination="uploads")
    with pytest.raises(pydantic.ValidationError):
        config.destination = "elsewhere"


def test_secrets_stay_out_of_the_repr() -> None:
    config = Config(
        AZURE_STORAGE_CONNECTION_STRING="AccountName=a;AccountKey=c2VrcmV0",
        AZURE_STORAGE_CREDENTIAL="c2VrcmV0",
        GCP_CREDENTIALS="c2VrcmV0",
    )
    assert "c2VrcmV0" not in repr(config)
    assert config.AZURE_STORAGE_CREDENTIAL == "c2VrcmV0"


def test_a_cloud_key_falls_back_to_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_BUCKET_NAME", "from-env")
    assert Config().setting("AWS_BUCKET_NAME") == "from-env"
    assert Config(AWS_BUCKET_NAME="from-config").setting("AWS_BUCKET_NAME") == "from-config"
    monkeypatch.delenv("AWS_BUCKET_NAME")
    with pytest.raises(ValueError, match="S3Storage needs a bucket: set the AWS_BUCKET_NAME config key"):
        Config().required_setting("AWS_BUCKET_NAME", "S3Storage needs a bucket")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (
            lambda: LocalStorage("f", config=Config(AWS_BUCKET_NAME="b")),
            "LocalStorage does not use the config key 'AWS_BUCKET_NAME' (a key of s3)",
        ),
        (
            lambda: MemoryStorage("f", config=Config(part_size=6 * 2**20)),
            "MemoryStorage does not use the config key 'part_size'",
        ),
        (
            lambda: GCSStorage("f", config=Config(GCP_BUCKET_NAME="b", extra_args={"ACL": "private"})),
            "GCSStorage does not use the config key 'extra_args' (a key of s3)",
        ),
        (
            lambda: AzureStorage(
                "f", config=Config(AZURE_STORAGE_CONTAINER="c", endpoint_url="http://127.0.0.1:9")
            ),
            "AzureStorage does not use the config key 'endpoint_url' (a key of gcs, s3)",
        ),
        (
            lambda: S3Storage("f", config=Config(AWS_BUCKET_NAME="b", GCP_PROJECT="p")),
            "S3Storage does not use the config key 'GCP_PROJECT' (a key of gcs)",
        ),
    ],
)
def test_a_key_of_another_backend_fails_at_construction(make: Any, words: str) -> None:
    with pytest.raises(TypeError) as caught:
        make()
    assert words in str(caught.value)


def test_a_plain_dict_is_not_a_config() -> None:
    with pytest.raises(TypeError, match="config must be a Config, not dict"):
        LocalStorage("f", config={"destination": "uploads"})  # type: ignore[arg-type]


def test_the_keys_of_the_seed_still_apply_to_their_backends() -> None:
    S3Storage("f", config=Config(AWS_BUCKET_NAME="b", AWS_DEFAULT_REGION="eu-west-1", part_size=5 * 2**20))
    GCSStorage("f", config=Config(GCP_BUCKET_NAME="b", GCP_PROJECT="p", endpoint_url="http://127.0.0.1:9"))
    LocalStorage(
        "f", config=Config(destination="uploads", base_url="/media", max_file_size=10, overwrite=True)
    )
