"""What a tracking URI points at, checked before MLflow touches it, so a wrong URI fails in seconds and clearly.

MLflow itself creates an sqlite database (and its folder) at any path it is given, so reading a registry
from a mistyped path would create an empty one and then say "Registered Model not found". And its HTTP
client waits out a read timeout on every retry, so a server that accepts connections and never answers
takes half a minute to fail. Readers call `check_tracking_store(uri, must_exist=True)`; every client does
the server check (`mlflow_logger.make_client`).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from basisfm.errors import TrackingError

# A live MLflow server answers /health in milliseconds; one that says nothing for this long is not serving.
SERVER_ANSWER_SECONDS = 3.0
_WHERE_URI_COMES_FROM = "tracking_uri= / tracking.tracking_uri, or $MLFLOW_TRACKING_URI"


def check_tracking_store(tracking_uri: str, *, must_exist: bool = False) -> None:
    """Raise `TrackingError` when `tracking_uri` cannot be what the caller needs; create nothing.

    A server (http/https) must answer an HTTP request within `SERVER_ANSWER_SECONDS`: any answer counts,
    even an error status or a TLS complaint, which MLflow then reports in its own words. With
    `must_exist` (reading runs or registered models), a local store (an sqlite file, a file-store
    directory) must already be there. Other schemes (databricks, ...) are MLflow's to check.
    """
    scheme = urlparse(tracking_uri).scheme.lower()
    if scheme in ("http", "https"):
        _check_server_answers(tracking_uri)
    elif must_exist:
        path = local_store_path(tracking_uri)
        if path is not None and not path.exists():
            missing = next((p for p in [path, *path.parents] if p.parent.exists()), path)
            raise TrackingError(
                f"there is no MLflow registry at tracking URI {tracking_uri!r}: {str(missing)!r} does not exist "
                f"(nothing was created there); check the path ({_WHERE_URI_COMES_FROM}), or register a model "
                "there first (python -m jobs.pretrain registers its checkpoint)")


def local_store_path(tracking_uri: str) -> Path | None:
    """The database file of an sqlite URI, or the directory of a file store; None for anything else
    (servers, in-memory sqlite, other schemes)."""
    parsed = urlparse(tracking_uri)
    scheme = parsed.scheme.lower()
    if scheme == "sqlite":
        # sqlite:///relative.db and sqlite:////absolute.db (SQLAlchemy's spelling); query options dropped.
        path = tracking_uri.split("?", 1)[0][len("sqlite:///"):] if tracking_uri.lower().startswith("sqlite:///") else ""
        return None if path in ("", ":memory:") else Path(unquote(path)).expanduser()
    if scheme == "file":
        return Path(unquote(parsed.path))
    if scheme == "" and tracking_uri and not tracking_uri.startswith("databricks"):  # MLflow's names, not paths
        return Path(tracking_uri).expanduser()  # a plain path: MLflow's file store
    return None


def _check_server_answers(tracking_uri: str) -> None:
    import requests

    url = tracking_uri.rstrip("/") + "/health"
    seconds = SERVER_ANSWER_SECONDS
    try:
        # No retries and no redirects: one question, answered or not within the limit.
        with requests.get(url, timeout=(seconds, seconds), allow_redirects=False, stream=True):
            return
    except requests.exceptions.SSLError:
        return  # it answered; certificates are MLflow's to judge (MLFLOW_TRACKING_INSECURE_TLS, ...)
    except requests.exceptions.ConnectTimeout:
        raise TrackingError(
            f"the tracking server at {tracking_uri!r} did not accept a connection within {seconds:g} s; check "
            f"that it runs, the host and port, and the network ({_WHERE_URI_COMES_FROM})") from None
    except requests.exceptions.ReadTimeout:
        raise TrackingError(
            f"the tracking server at {tracking_uri!r} accepts connections but sent no answer within {seconds:g} s; "
            f"check that an MLflow server (mlflow server ...) listens there and is not stuck (its log), "
            f"or correct the URI ({_WHERE_URI_COMES_FROM})") from None
    except (requests.exceptions.RequestException, OSError) as exc:
        reason = _connection_reason(exc)
        raise TrackingError(
            f"cannot reach the tracking server at {tracking_uri!r} ({reason}); check that it runs and the URI "
            f"({_WHERE_URI_COMES_FROM})") from None


def _connection_reason(exc: BaseException) -> str:
    """The innermost OS-level reason ("Connection refused", "Name or service not known"), not urllib3's prose."""
    seen, cause = set(), exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        nested = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else None
        cause = getattr(cause, "reason", None) or nested or cause.__cause__ or cause.__context__
    return type(exc).__name__

