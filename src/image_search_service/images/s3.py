"""S3-compatible buckets as a photo source (AWS, Backblaze B2, MinIO, Cloudflare R2, ...).

boto3 reads the standard AWS configuration: ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``), ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``, ``AWS_PROFILE`` and the shared config files. Nothing here ever puts a
credential into a message: S3 errors are reported by their code and the bucket/key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from image_search_service.core.errors import ServiceError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger(__name__)

SCHEME = "s3://"
_CHUNK = 1 << 20
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_NO_BUCKET = frozenset({"NoSuchBucket"})
_DENIED = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "403",
        "Forbidden",
        "AllAccessDisabled",
        "InvalidClientTokenId",
    }
)


class SourceUnavailable(ServiceError):
    """The bucket's endpoint cannot be reached or failed."""

    status_code = 503


class SourceNotFound(ServiceError):
    """No such bucket."""

    status_code = 404


class SourceAccessDenied(ServiceError):
    """The credentials are missing, wrong or lack permission."""

    status_code = 403


class ObjectGone(ServiceError):
    """The object was removed (e.g. between listing and download)."""

    status_code = 404


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" for the whole bucket

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}"

    def object_uri(self, key: str) -> str:
        return f"{SCHEME}{self.bucket}/{key}"


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    etag: str
    size: int
    last_modified_ns: int

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def as_s3_uri(source: str | os.PathLike[str]) -> str | None:
    """``s3://bucket/prefix`` for an S3 source, None for a local path. A ``Path`` made
    from an URI (``Path("s3://b/k")`` collapses to ``s3:/b/k``) is recognised too."""
    text = os.fspath(source)
    if text.startswith(SCHEME):
        return text
    if not isinstance(source, str) and text.startswith("s3:/"):
        return SCHEME + text[len("s3:/") :]
    return None


def parse_uri(uri: str) -> S3Location:
    if not uri.startswith(SCHEME):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, prefix = uri[len(SCHEME) :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri}")
    return S3Location(bucket, prefix)


def parse_object_uri(uri: str) -> tuple[str, str]:
    location = parse_uri(uri)
    if not location.prefix or location.prefix.endswith("/"):
        raise ValueError(f"not an object URI (no key): {uri}")
    return location.bucket, location.prefix


def _code(exc: Exception) -> str:
    response: Any = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or type(exc).__name__


def _describe(exc: Exception, where: str) -> ServiceError:
    """A domain error naming the S3 error code and where, never echoing the request
    (which may carry a signature) or a credential."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return SourceAccessDenied(
            f"no AWS credentials for {where}: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
            "or AWS_PROFILE"
        )
    if isinstance(exc, EndpointConnectionError):
        return SourceUnavailable(f"cannot reach the S3 endpoint for {where}")
    code = _code(exc)
    if isinstance(exc, ClientError):
        if code in _NO_BUCKET:
            return SourceNotFound(f"bucket not found: {where}")
        if code in _NOT_FOUND:
            return ObjectGone(f"object not found: {where}")
        if code in _DENIED:
            return SourceAccessDenied(
                f"access denied to {where} ({code}): check the AWS credentials and their "
                "permissions"
            )
    return SourceUnavailable(f"S3 request for {where} failed ({code})")


class S3Source:
    """One boto3 client per process (thread-safe), made on first use."""

    def __init__(self, *, max_connections: int = 16) -> None:
        self._max_connections = max_connections
        self._client: S3Client | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> S3Client:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.session.Session().client(
                    "s3",
                    config=Config(
                        max_pool_connections=self._max_connections,
                        retries={"max_attempts": 3, "mode": "standard"},
                    ),
                )
            return self._client

    def list_objects(self, location: S3Location) -> Iterator[S3Object]:
        """Every object below the prefix, page by page (1000 keys a request)."""
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=location.bucket, Prefix=location.prefix):
                for item in page.get("Contents", []):
                    yield S3Object(
                        bucket=location.bucket,
                        key=item["Key"],
                        etag=item.get("ETag", "").strip('"'),
                        size=int(item.get("Size", 0)),
                        last_modified_ns=_ns(item.get("LastModified")),
                    )
        except (BotoCoreError, ClientError) as exc:
            raise _describe(exc, location.uri) from None

    def head(self, bucket: str, key: str) -> S3Object | None:
        """The object's current state; None when it does not exist."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            error = _describe(exc, f"{SCHEME}{bucket}/{key}")
            if isinstance(error, ObjectGone):
                # A HEAD answer has no body, so a missing bucket reads as a bare 404 like a
                # missing object: ask the bucket before calling the object gone.
                self._check_bucket(bucket)
                return None
            raise error from None
        return S3Object(
            bucket=bucket,
            key=key,
            etag=str(head.get("ETag", "")).strip('"'),
            size=int(head.get("ContentLength", 0)),
            last_modified_ns=_ns(head.get("LastModified")),
        )

    def _check_bucket(self, bucket: str) -> None:
        """Raise :class:`SourceNotFound` (or the access error) when ``bucket`` is not
        there: HEAD answers a bare 404 for a missing bucket too."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=bucket)
        except (BotoCoreError, ClientError) as exc:
            error = _describe(exc, f"{SCHEME}{bucket}/")
            raise (
                SourceNotFound(f"bucket not found: {SCHEME}{bucket}/")
                if isinstance(error, ObjectGone)
                else error
            ) from None

    def open(self, bucket: str, key: str) -> Iterator[bytes]:
        """Start reading the object now (so a missing object fails here, not halfway
        through a response) and return its bytes in chunks as they arrive."""
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"{SCHEME}{bucket}/{key}"
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise _describe(exc, where) from None

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(_CHUNK)
            except (BotoCoreError, ClientError) as exc:
                raise _describe(exc, where) from None
            finally:
                body.close()

        return chunks()

    def download(self, bucket: str, key: str, target: Path) -> str:
        """Stream the object into ``target``; returns its SHA-256 (computed on the way)."""
        digest = hashlib.sha256()
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as fh:
            for chunk in self.open(bucket, key):
                digest.update(chunk)
                fh.write(chunk)
        return digest.hexdigest()


def _ns(value: datetime | None) -> int:
    return int(value.timestamp() * 1_000_000_000) if value is not None else 0
