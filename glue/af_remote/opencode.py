"""A small client for the OpenCode server's HTTP API (httpx, basic auth).

The password goes in the Authorization header only; it never reaches a log line
(httpx logs no headers, and our own messages are redacted).
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from af_remote.errors import AfRemoteError
from af_remote.ui import log

USER = "opencode"


class PasswordRefused(AfRemoteError):
    """The server answered 401: retrying cannot help."""


class Server:
    def __init__(self, base_url: str, password: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url,
            auth=(USER, password),
            timeout=timeout,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self, method: str, path: str, *, directory: str | None = None, **kw: Any
    ) -> httpx.Response:
        params = {"directory": directory} if directory else None
        log.info("%s %s%s", method, self.base_url, path)
        try:
            response = self._client.request(method, path, params=params, **kw)
        except httpx.HTTPError as error:
            raise AfRemoteError(
                f"OpenCode server at {self.base_url} did not answer: {error}"
            ) from error
        log.debug("  -> %s", response.status_code)
        if response.status_code == 401:
            raise PasswordRefused(
                f"OpenCode server at {self.base_url} refused the password",
                hint="the local password file does not match the sandbox's",
            )
        response.raise_for_status()
        return response

    def health(self, timeout: float | None = None) -> dict[str, Any]:
        response = (
            self._request("GET", "/global/health")
            if timeout is None
            else self._request("GET", "/global/health", timeout=timeout)
        )
        answer: dict[str, Any] = response.json()
        return answer

    def wait_healthy(self, timeout: float) -> dict[str, Any]:
        """Poll ``/global/health`` until it answers; it also wakes a paused sprite."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                # Short attempts: a connection made just as the server starts
                # listening can be accepted and never answered.
                return self.health(timeout=1.0)
            except PasswordRefused:
                raise
            except (AfRemoteError, httpx.HTTPError) as error:
                if time.monotonic() + delay > deadline:
                    raise AfRemoteError(
                        f"OpenCode server at {self.base_url} is not healthy after "
                        f"{timeout:.0f}s: {error}"
                    ) from error
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def session_status(self, directory: str | None) -> dict[str, Any]:
        answer: dict[str, Any] = self._request(
            "GET", "/session/status", directory=directory
        ).json()
        return answer

    def messages(self, session_id: str, directory: str | None) -> list[Any]:
        answer: list[Any] = self._request(
            "GET", f"/session/{session_id}/message", directory=directory
        ).json()
        return answer

    def abort(self, session_id: str, directory: str | None) -> None:
        self._request("POST", f"/session/{session_id}/abort", directory=directory)
