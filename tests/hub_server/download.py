"""Downloads: ``/resolve`` (regular files served directly, LFS files redirected to the CDN), the CDN itself,
``Range`` requests, injected download failures, and the request log tests read back."""

from __future__ import annotations

import os
import threading
from urllib.parse import quote

from .model import FailureRule, HubError, RequestRecord, _Request, _Response


class DownloadMixin:
    """File content goes out through ``_file_response`` (ranges, failure rules); every request is logged."""

    requests: list[RequestRecord]
    failures: list[FailureRule]
    _lock: threading.RLock
    _log_lock: threading.Lock

    def fail_downloads_matching(
        self, pattern: str, *, mode: str = "drop", times: int | None = None, after_bytes: int | None = None
    ) -> FailureRule:
        """Break downloads of repo files matching ``pattern`` (fnmatch on ``path`` or ``repo_id/path``).

        ``drop``: send the headers and part of the body, then close the connection (FIN). The client sees an
        incomplete body (``RemoteProtocolError``) and retries with a ``Range`` header up to 5 times, sleeping 1 s
        each time (see :func:`no_retry_sleep`); resumed requests get 0 bytes before the drop.
        ``reset``: same but with a TCP RST: ``httpx2.ReadError``, which ``http_get`` does not retry.
        ``error``: answer HTTP 500 to the content GET (the metadata HEAD still succeeds).
        """
        if mode not in ("drop", "reset", "error"):
            raise ValueError("mode must be 'drop', 'reset' or 'error'")
        rule = FailureRule(pattern, mode=mode, times=times, after_bytes=after_bytes)
        with self._lock:
            self.failures.append(rule)
        return rule

    def clear_failures(self) -> None:
        with self._lock:
            self.failures.clear()

    def clear_requests(self) -> None:
        with self._log_lock:
            self.requests.clear()

    def downloaded_files(self, repo_id: str | None = None) -> list[str]:
        """Repo paths whose *content* was fetched (GET on /resolve for regular files, GET on the CDN for LFS)."""
        out = []
        for r in list(self.requests):
            if r.method != "GET" or r.status >= 400:
                continue
            parsed = self._parse_download_path(r)
            if parsed is None:
                continue
            rid, path, is_redirect = parsed
            if is_redirect or (repo_id is not None and rid != repo_id):
                continue
            out.append(path)
        return out

    def _parse_download_path(self, r: RequestRecord) -> tuple[str, str, bool] | None:
        segs = r.path.split("/")[1:]
        if r.server == "cdn":
            if len(segs) >= 5 and segs[0] == "__cdn__":
                # /__cdn__/{sha256}/{type}/{ns}/{name}/{path...} (repo id decoded into two segments here)
                return f"{segs[3]}/{segs[4]}", "/".join(segs[5:]), False
            return None
        if segs and segs[0] in ("datasets", "spaces"):
            segs = segs[1:]
        if "resolve" not in segs[:3]:
            return None
        i = segs.index("resolve")
        rest = segs[i + 1 :]
        if len(rest) >= 3 and rest[0] == "refs" and rest[1] in ("pr", "convert", "heads", "tags"):
            rest = rest[3:]
        else:
            rest = rest[1:]
        return "/".join(segs[:i]), "/".join(rest), r.status in (301, 302, 307)

    def _log(self, record: RequestRecord) -> None:
        with self._log_lock:
            self.requests.append(record)

    # ------------------------------------------------------------------ endpoints: download

    def _match_failure(self, repo_id: str, path: str) -> FailureRule | None:
        with self._lock:
            for rule in self.failures:
                if rule.matches(repo_id, path):
                    rule.hits += 1
                    return rule
        return None

    def _file_response(
        self, req: _Request, blob_path: str, size: int, headers: dict[str, str], repo_id: str, path: str
    ) -> _Response:
        start, length, status = 0, size, 200
        rng = req.headers.get("Range")
        if rng:
            spec = rng.strip().lower()
            if spec.startswith("bytes=") and "," not in spec:
                first, _, last = spec[len("bytes=") :].partition("-")
                if first.strip():
                    start = int(first)
                    end = int(last) if last.strip() else size - 1
                else:
                    start = max(0, size - int(last))
                    end = size - 1
                end = min(end, size - 1)
                if start > end and size > 0 or start >= size > 0:
                    raise HubError(416, "Range not satisfiable", None, {"Content-Range": f"bytes */{size}"})
                length = max(0, end - start + 1)
                status = 206
                headers = {**headers, "Content-Range": f"bytes {start}-{end}/{size}"}
        resp = _Response(status, headers, file=(blob_path, start, length))
        if req.method == "GET":
            resp.failure = self._match_failure(repo_id, path)
            if resp.failure is not None and resp.failure.mode == "error":
                raise HubError(500, "Injected download failure (fake hub)")
        return resp

    def _resolve_file(self, req: _Request, repo_type: str, repo_id: str, revision: str, path: str) -> _Response:
        with self._lock:
            repo = self._get_repo(req, repo_type, repo_id)
            commit = self._resolve_or_404(repo, revision)
            entry = commit.tree.get(path)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{entry.git_oid}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
        }
        if entry.lfs:
            location = f"{self.cdn_url}/__cdn__/{entry.sha256}/{repo_type}/{quote(repo_id, safe='')}/{quote(path)}"
            headers.update(
                {
                    "Location": location,
                    "X-Linked-Etag": f'"{entry.sha256}"',
                    "X-Linked-Size": str(entry.size),
                    "Content-Type": "text/plain; charset=utf-8",
                }
            )
            return _Response(302, headers)
        return self._file_response(req, self._blob_path(entry.sha256), entry.size, headers, repo_id, path)

    def _cdn_download(self, req: _Request) -> _Response:
        # /__cdn__/{sha256}/{repo_type}/{repo_id (one encoded segment)}/{path...}
        sha, repo_id, path = req.segs[1], req.segs[3], "/".join(req.segs[4:])
        blob = self._blob_path(sha)
        if len(sha) != 64 or not os.path.exists(blob):
            raise HubError(404, "Not Found")
        size = os.path.getsize(blob)
        headers = {
            "ETag": f'"{sha}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{path.rsplit("/", 1)[-1]}"',
        }
        return self._file_response(req, blob, size, headers, repo_id, path)
