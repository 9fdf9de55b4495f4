"""citeqa's error hierarchy. Messages name the file, page or limit involved.

The server maps these types to HTTP statuses in one place (server/errors.py); the CLI prints
`str(error)` as one line.
"""

from __future__ import annotations


class CiteqaError(Exception):
    """Base class of every error citeqa raises on purpose."""


class ConfigError(CiteqaError):
    """A setting is missing, malformed, or names something that does not exist."""


class ModelNotAvailable(CiteqaError):
    """A model (embedder, LLM, reranker) cannot be found offline; the message says what to install or set."""


class ModelIntegrityError(CiteqaError):
    """A prepared model file does not match its expected checksum."""


class ParseError(CiteqaError):
    """A file could not be turned into a ParsedDocument."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class EncryptedDocument(ParseError):
    """The document needs a password (or the given one is wrong)."""


class UnsupportedFormat(ParseError):
    """No parser handles this file type."""


class DocumentTooLarge(ParseError):
    """The document exceeds a configured size limit (pages, bytes, page area)."""


class EmptyDocument(ParseError):
    """The document has no pages or no extractable text."""


class CorruptDocument(ParseError):
    """The file is damaged or truncated, or its content is not what its extension says."""


class KnowledgeBaseError(CiteqaError):
    """Base for knowledge-base problems."""


class KnowledgeBaseNotFound(KnowledgeBaseError):
    pass


class KnowledgeBaseExists(KnowledgeBaseError):
    pass


class EmbedderMismatch(KnowledgeBaseError):
    """The knowledge base was built with another embedder; mixing vectors would give silent garbage."""


class IndexMismatch(KnowledgeBaseError):
    """The knowledge base was chunked or keyword-indexed by other rules than the running code's."""


class EmbeddingsPending(KnowledgeBaseError):
    """The operation needs every chunk's vector, and some are still in the embedding queue."""


class DocumentNotFound(KnowledgeBaseError):
    pass


class InvalidRequest(CiteqaError):
    """A caller sent something malformed (bad name, empty question, too-large upload...)."""


class PayloadTooLarge(InvalidRequest):
    pass


class Unauthorized(CiteqaError):
    pass


class Forbidden(CiteqaError):
    """A valid API key that may not do this: a knowledge base outside its scope, or a write with a read-only key."""


class GenerationError(CiteqaError):
    """The LLM backend failed (remote server down, context overflow...)."""


class EmbeddingError(CiteqaError):
    """The embedding backend failed: every remote server unreachable after its retries, a refused request
    (bad key, bad input), or a malformed response. A server serving the wrong model is EmbedderMismatch."""


class Cancelled(CiteqaError):
    """A job was cancelled by its owner."""


class JobNotFound(CiteqaError):
    """No ingestion job with that id (finished jobs expire after server.jobs_keep_days)."""
