"""The store on S3 or an S3-compatible object store (MinIO, Ceph RGW, moto), with boto3.

Records are written once with ``PUT`` and ``If-None-Match: *`` (S3 answers 412 when the key
exists, 409 ``ConditionalRequestConflict`` when a concurrent conditional write is in flight:
then the write is retried and decides again). Blobs live under ``blobs/<sha256>``, are never
overwritten, and are read through a local cache keyed by sha256 and verified on every read.
Endpoint, region and credentials come from the standard AWS chain (``AWS_ENDPOINT_URL``,
``AWS_REGION``, ``AWS_ACCESS_KEY_ID`` ...). Transient failures (5xx, throttling, timeouts) are
retried by botocore ("standard" mode, bounded); what still fails is ``StoreUnavailableError``.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from app.store.backend import StoreUnavailableError
from app.store.files import sha256_of

BLOBS = "blobs/"
_CONFLICT_RETRIES = 10


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, "prefix/"); ValueError if it is not one."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r}")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "scriptserve-store-cache"


class S3Backend:
    """Records and blobs as objects under ``s3://bucket/prefix/``."""

    def __init__(self, url: str, cache_dir: Path | None = None, timeout_s: float = 10.0,
                 attempts: int = 4, client: Any = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = parse_url(url)
        self.description = f"s3://{self.bucket}/{self.prefix}"
        self.cache = Path(cache_dir or default_cache_dir()) / self.bucket / (self.prefix or "_")
        config = Config(
            retries={"mode": "standard", "total_max_attempts": attempts},
            connect_timeout=timeout_s, read_timeout=timeout_s,
        )
        self.client = client or boto3.client("s3", config=config)

    # errors ------------------------------------------------------------------------------
    def _unavailable(self, exc: Exception, what: str) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"the model store {self.description} is unreachable ({what}): {type(exc).__name__}: {exc}"
        )

    @staticmethod
    def _code(exc: Exception) -> tuple[str, int]:
        response = getattr(exc, "response", None) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return code, status

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code, status = self._code(exc)
            if status >= 500 or code in {"SlowDown", "ServiceUnavailable", "InternalError", "NoSuchBucket",
                                         "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
                raise self._unavailable(exc, what) from exc
            raise
        except BotoCoreError as exc:  # connection refused, timeouts, after botocore's retries
            raise self._unavailable(exc, what) from exc

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad store key {key!r}")
        return self.prefix + key

    # records -----------------------------------------------------------------------------
    def create(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        for attempt in range(_CONFLICT_RETRIES):
            try:
                self._call(f"create {key}", self.client.put_object, Key=self._key(key), Body=data,
                           IfNoneMatch="*")
                return True
            except ClientError as exc:
                code, status = self._code(exc)
                if status == 412 or code == "PreconditionFailed":
                    return False
                if status == 409 or code == "ConditionalRequestConflict":
                    time.sleep(0.05 * (attempt + 1))  # a concurrent conditional write: ask again
                    continue
                raise self._unavailable(exc, f"create {key}") from exc
        raise StoreUnavailableError(f"the model store {self.description} kept answering 409 for {key}")

    def put(self, key: str, data: bytes) -> None:
        self._call(f"put {key}", self.client.put_object, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            response = self._call(f"get {key}", self.client.get_object, Key=self._key(key))
        except ClientError as exc:
            code, status = self._code(exc)
            if status == 404 or code in {"NoSuchKey", "404"}:
                return None
            raise self._unavailable(exc, f"get {key}") from exc
        try:
            return bytes(response["Body"].read())
        except Exception as exc:  # noqa: BLE001 - a body cut off mid-read
            raise self._unavailable(exc, f"read {key}") from exc

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": self._key(prefix) if prefix else self.prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(f"list {prefix}", self.client.list_objects_v2, **kwargs)
            found += [str(o["Key"])[len(self.prefix):] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
        return sorted(found)

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", self.client.delete_object, Key=self._key(key))

    # blobs -------------------------------------------------------------------------------
    @staticmethod
    def _check_digest(digest: str) -> str:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"bad blob digest {digest!r}")
        return digest

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._call(f"head {key}", self.client.head_object, Key=self._key(key))
            return True
        except ClientError as exc:
            code, status = self._code(exc)
            if status == 404 or code in {"NoSuchKey", "404", "NotFound"}:
                return False
            raise self._unavailable(exc, f"head {key}") from exc

    def put_blob(self, digest: str, source: Path) -> None:
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        key = BLOBS + self._check_digest(digest)
        if self._exists(key):
            return
        try:  # multipart above 64 MiB; the same bytes under the same key, so a race is harmless
            self.client.upload_file(str(source), self.bucket, self._key(key),
                                    Config=TransferConfig(multipart_threshold=64 << 20))
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(exc, f"upload blob {digest[:12]}") from exc
        except Exception as exc:  # boto3's S3UploadFailedError wraps the ClientError
            raise self._unavailable(exc, f"upload blob {digest[:12]}") from exc

    def blob_path(self, digest: str) -> Path:
        from botocore.exceptions import BotoCoreError, ClientError

        target = self.cache / self._check_digest(digest)
        if target.is_file():
            if sha256_of(target) == digest:
                return target
            target.unlink(missing_ok=True)  # a damaged cache entry: fetch it again
        if not self._exists(BLOBS + digest):
            raise FileNotFoundError(f"blob {digest[:12]} is missing from the store")
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.parent / f".{digest}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            self.client.download_file(self.bucket, self._key(BLOBS + digest), str(temp))
            if sha256_of(temp) != digest:
                raise OSError(f"blob {digest[:12]} does not match its sha256: the store is damaged")
            os.replace(temp, target)
        except (BotoCoreError, ClientError) as exc:
            raise self._unavailable(exc, f"download blob {digest[:12]}") from exc
        finally:
            temp.unlink(missing_ok=True)
        return target

    def delete_blob(self, digest: str) -> None:
        key = self._key(BLOBS + self._check_digest(digest))
        self._call("delete blob", self.client.delete_object, Key=key)
        (self.cache / digest).unlink(missing_ok=True)

    def blobs(self) -> list[str]:
        return sorted(k[len(BLOBS):] for k in self.keys(BLOBS) if len(k) == len(BLOBS) + 64)

    def scratch(self) -> Path:
        return self.cache / ".staging"
