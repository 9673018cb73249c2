"""Persisted documents: a client names a GraphQL document by its hash instead of sending it.

Two protocols, one lookup (`PersistedDocuments.resolve`):

- Automatic persisted queries (APQ), as Apollo's `createPersistedQueryLink` speaks them:
  `extensions.persistedQuery = {"version": 1, "sha256Hash": ...}`. A hash this process
  does not know answers `PersistedQueryNotFound` (code PERSISTED_QUERY_NOT_FOUND); the link
  then sends the text with the hash, which is checked, validated and only then kept. The
  store is a bounded LRU per process. It need not be shared between instances nor survive
  a restart: a miss costs the client one more round trip, after which it registers again.
- Trusted documents: the manifest `@graphql-codegen/client-preset` writes with
  `persistedDocuments: true` (persisted-documents.json, `{"sha256:<hex>": document}`). A
  client sends `documentId` (the GraphQL-over-HTTP persisted-documents appendix; with or
  without the `sha256:` prefix) or the APQ hash. With `trusted_only`, nothing else runs:
  no free text, no APQ registration.

No web framework here: the HTTP view and the WebSocket handler call `resolve` and turn a
`PersistedDocumentError` into their protocol's error.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

APQ_VERSION = 1
# The longest document APQ keeps (it still runs when longer): bounds the store's memory
# to about APQ_CACHE_SIZE x this.
MAX_STORED_CHARS = 32_768

PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
PERSISTED_QUERY_NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
PERSISTED_QUERY_HASH_MISMATCH = "PERSISTED_QUERY_HASH_MISMATCH"
TRUSTED_DOCUMENT_REQUIRED = "TRUSTED_DOCUMENT_REQUIRED"
BAD_REQUEST = "BAD_REQUEST"

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class PersistedDocumentError(Exception):
    """A persisted-document request refused before any GraphQL runs.

    `status` is the HTTP status under application/graphql-response+json. `soft` errors
    (not found, not supported) are the APQ handshake: under application/json they are a
    200, as Apollo Server answers them, so every client version reads the body.
    """

    def __init__(self, message: str, code: str, status: int, *, soft: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.soft = soft

    @property
    def formatted(self) -> dict[str, object]:
        return {"message": self.message, "extensions": {"code": self.code}}


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load_manifest(path: Path) -> dict[str, str]:
    """`{id: document}` from client-preset's persisted-documents.json (or Apollo's
    persisted query manifest, `{"operations": [{"id", "body"}, ...]}`); ValueError says why not."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON: {exc}") from None
    if isinstance(raw, dict) and isinstance(raw.get("operations"), list):
        pairs: Iterable[tuple[object, object]] = (
            (op.get("id"), op.get("body")) if isinstance(op, dict) else (None, None)
            for op in raw["operations"]
        )
    elif isinstance(raw, dict):
        pairs = raw.items()
    else:
        raise ValueError(f"{str(path)!r} must hold a JSON object {{hash: document}}")
    manifest: dict[str, str] = {}
    for key, document in pairs:
        if not (isinstance(key, str) and key and isinstance(document, str) and document):
            raise ValueError(
                f"{str(path)!r} must map each hash to a document (both non-empty strings)"
            )
        manifest[key] = document
    return manifest


class LruStore:
    """Hash -> document, the least recently used dropped beyond `size` entries."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        document = self._items.get(key)
        if document is not None:
            self._items.move_to_end(key)
        return document

    def put(self, key: str, document: str) -> None:
        self._items[key] = document
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def _not_found(message: str = "PersistedQueryNotFound") -> PersistedDocumentError:
    # The message is what Apollo's link (and older clients) match, besides the code.
    return PersistedDocumentError(message, PERSISTED_QUERY_NOT_FOUND, 404, soft=True)


def _bad_request(message: str, code: str = BAD_REQUEST) -> PersistedDocumentError:
    return PersistedDocumentError(message, code, 400)


class PersistedDocuments:
    """What a request's query text is, given its persisted-document fields.

    `validate(text)` says whether a document parses and validates; APQ keeps only those.
    """

    def __init__(
        self,
        *,
        manifest: Mapping[str, str] | None = None,
        apq_size: int = 1000,
        trusted_only: bool = False,
        validate: Callable[[str], bool] = lambda _text: True,
    ) -> None:
        self.manifest = dict(manifest or {})
        # The APQ hash of each trusted document, whatever hash the manifest is keyed by.
        self._by_sha256 = {sha256_hex(text): text for text in self.manifest.values()}
        self._trusted_texts = frozenset(self.manifest.values())
        self.trusted_only = trusted_only
        self.apq = LruStore(apq_size) if apq_size > 0 and not trusted_only else None
        self._validate = validate

    @property
    def active(self) -> bool:
        """Whether a request without persisted-document fields needs `resolve` at all."""
        return self.trusted_only

    def resolve(
        self, query: object, extensions: object = None, document_id: object = None
    ) -> object:
        """The query text to run (`query` itself for an ordinary request), or
        PersistedDocumentError. A non-string `query` passes through for GraphQL to refuse."""
        if document_id is not None:
            return self._by_document_id(query, document_id)
        persisted = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
        if persisted is not None:
            return self._by_hash(query, persisted)
        if self.trusted_only and query is not None and query not in self._trusted_texts:
            raise PersistedDocumentError(
                "this server runs only trusted documents: send a documentId from its manifest",
                TRUSTED_DOCUMENT_REQUIRED,
                400,
            )
        return query

    def _by_document_id(self, query: object, document_id: object) -> str:
        if not isinstance(document_id, str) or not document_id:
            raise _bad_request("documentId must be a non-empty string")
        if query is not None:
            raise _bad_request("send either documentId or query, not both")
        document = self.manifest.get(document_id)
        if document is None:
            # client-preset keys its manifest "sha256:<hex>"; accept either spelling.
            key = document_id.removeprefix("sha256:")
            document = self.manifest.get(key) or self._by_sha256.get(key.lower())
        if document is None:
            raise _not_found("no trusted document has this documentId")
        return document

    def _by_hash(self, query: object, persisted: object) -> object:
        if not isinstance(persisted, dict):
            raise _bad_request("extensions.persistedQuery must be an object")
        version = persisted.get("version")
        if type(version) is not int or version != APQ_VERSION:
            raise _bad_request("Unsupported persisted query version: only version 1 is")
        digest = persisted.get("sha256Hash")
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise _bad_request("extensions.persistedQuery.sha256Hash must be a SHA-256 hex digest")
        digest = digest.lower()
        if query is None:
            document = self._by_sha256.get(digest)
            if document is None and self.apq is not None:
                document = self.apq.get(digest)
            if document is not None:
                return document
            if self.apq is None and not self.trusted_only:
                raise PersistedDocumentError(
                    "PersistedQueryNotSupported", PERSISTED_QUERY_NOT_SUPPORTED, 400, soft=True
                )
            raise _not_found()
        if not isinstance(query, str):
            return query  # GraphQL's own refusal
        if sha256_hex(query) != digest:
            raise _bad_request("provided sha does not match query", PERSISTED_QUERY_HASH_MISMATCH)
        if digest in self._by_sha256:
            return query
        if self.trusted_only:
            raise PersistedDocumentError(
                "this server runs only trusted documents: this one is not in its manifest",
                TRUSTED_DOCUMENT_REQUIRED,
                400,
            )
        if self.apq is None:
            raise PersistedDocumentError(
                "PersistedQueryNotSupported", PERSISTED_QUERY_NOT_SUPPORTED, 400, soft=True
            )
        if len(query) <= MAX_STORED_CHARS and self._validate(query):
            self.apq.put(digest, query)
        return query
