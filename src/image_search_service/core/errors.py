"""Domain errors. Each carries the HTTP status it means, so one handler renders them."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: an expected failure with a message meant for the user."""

    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConfigError(ServiceError):
    status_code = 500


class InvalidRequest(ServiceError):
    status_code = 422


class AssetNotFound(ServiceError):
    status_code = 404


class UnsupportedImage(ServiceError):
    """Not an image we can read: corrupt, truncated, empty or another format."""

    status_code = 415


class ImageShapeRefused(UnsupportedImage):
    """A readable image too elongated to encode at a bounded cost (see MAX_ASPECT_RATIO)."""

    status_code = 422


class ImageTooLarge(ServiceError):
    """Too many bytes or too many pixels (decompression bomb)."""

    status_code = 413


class ModelLoadError(ServiceError):
    status_code = 503


class ModelsLoading(ServiceError):
    """The server is loading its models in the background (``serve`` without
    ``--preload``): not ready for a load balancer's traffic yet."""

    status_code = 503


class ModelMismatch(ServiceError):
    """A collection was filled by another model than the one configured for it."""

    status_code = 409


class CollectionMissing(ServiceError):
    status_code = 409


class VectorStoreUnavailable(ServiceError):
    status_code = 503


class VectorStoreLocked(VectorStoreUnavailable):
    """The embedded store is open in another process."""


class DatabaseUnavailable(ServiceError):
    status_code = 503


class Unauthorized(ServiceError):
    status_code = 401


class Forbidden(ServiceError):
    """Credentials that are valid but do not allow this (a read key on an admin route)."""

    status_code = 403


class FolderNotFound(ServiceError):
    """A folder to index does not exist (on the server's disk)."""

    status_code = 422


class FolderUnreadable(ServiceError):
    """A folder to index exists but this process may not list or read it."""

    status_code = 422


class SearchNotFound(ServiceError):
    """An event names a search that was never recorded here, or has expired."""

    status_code = 404


class TooManyEvents(ServiceError):
    """A search already holds as many events as one search may."""

    status_code = 429


class InsufficientStorage(ServiceError):
    """DATA_DIR's disk is below its free-space reserve: writes are refused, reads go on."""

    status_code = 507
