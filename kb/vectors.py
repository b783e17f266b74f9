"""The knowledge bases' vectors in Chroma: each passage, and each sentence of every passage.

Chroma is embedded (`DATA_DIR/chroma`) or a server (`CHROMA_HOST`), always given our own
embeddings (Chroma's default embedding function downloads a model). A knowledge base has two
collections: its passages (`kb-<digest>`, entries under the passage's id) and their sentences
(`kb-<digest>-sentences`, entries `<passage id>/<n>` with the passage's id as `chunk`). Every
entry carries its document's id, so a document's vectors are removed together.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kb.chunking import split_sentences, with_heading

EMBED_BATCH = 32
CHROMA_BATCH = 2000
SENTENCES_PER_PASSAGE = 4

Vectors = dict[str, list[float]]  # text → its embedding


def embed_each(
    embed: Callable[[list[str]], list[list[float]]], texts: list[str], done: Callable[[float], None] | None = None
) -> Vectors:
    """Each text's vector, each text embedded once (a passage of one sentence is its own
    sentence; two overlapping passages share a sentence); `done` is told the share done."""
    unique = list(dict.fromkeys(texts))
    vectors: Vectors = {}
    for start in range(0, len(unique), EMBED_BATCH):
        batch = unique[start : start + EMBED_BATCH]
        vectors.update(zip(batch, embed(batch), strict=True))
        if done:
            done(min(1.0, (start + EMBED_BATCH) / len(unique)))
    return vectors


class VectorStore:
    def __init__(self, client: Callable[[], Any]) -> None:
        self._factory = client
        self._client: Any = None
        self._lock = threading.Lock()
        # By knowledge base: documents indexed by an older version whose sentences this process
        # has not embedded yet (found at start-up); their passages stand for their sentences.
        self._unfilled: dict[str, set[str]] = {}
        self._unfilled_lock = threading.Lock()

    @property
    def _chroma(self) -> Any:
        # Created on first use: importing chromadb costs start-up time that /health should not wait for.
        # Once: two threads making Chroma's client at the same moment (an ingestion and a
        # request) break its shared system (found by the API fuzzer: a 500).
        with self._lock:
            if self._client is None:
                self._client = self._factory()
        return self._client

    def passages(self, kb_id: str) -> Any:
        return self._chroma.get_or_create_collection(
            _collection_name(kb_id), embedding_function=None, metadata={"hnsw:space": "cosine"}
        )

    def sentences(self, kb_id: str) -> Any:
        return self._chroma.get_or_create_collection(
            _collection_name(kb_id) + "-sentences", embedding_function=None, metadata={"hnsw:space": "cosine"}
        )

    def drop(self, kb_id: str) -> None:
        with self._unfilled_lock:
            self._unfilled.pop(kb_id, None)
        for name in (_collection_name(kb_id), _collection_name(kb_id) + "-sentences"):
            try:
                self._chroma.delete_collection(name)
            except Exception:  # Chroma raises its own NotFound kinds; absent is what we want
                pass

    def remove(self, kb_id: str, doc_id: str) -> None:
        """A document's passages and sentences."""
        self.passages(kb_id).delete(where={"doc_id": doc_id})
        self.sentences(kb_id).delete(where={"doc_id": doc_id})
        self._filled(kb_id, doc_id)

    def add_passages(self, kb_id: str, doc_id: str, ids: list[str], vectors: list[list[float]]) -> None:
        _add(self.passages(kb_id), ids, vectors, [{"doc_id": doc_id} for _ in ids])

    def add_sentences(self, kb_id: str, doc_id: str, sentences: list[tuple[str, str]], vectors: Vectors) -> None:
        """`sentences`: (passage id, text) as `sentences_of` gives them; `vectors`: by text."""
        _add(
            self.sentences(kb_id),
            _sentence_ids(sentences),
            [vectors[text] for _, text in sentences],
            [{"doc_id": doc_id, "chunk": chunk_id} for chunk_id, _ in sentences],
        )
        self._filled(kb_id, doc_id)

    def _filled(self, kb_id: str, doc_id: str) -> None:
        with self._unfilled_lock:
            self._unfilled.get(kb_id, set()).discard(doc_id)

    def without_sentences(self, documents: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Those of (document, knowledge base) with no sentence stored: indexed by an older version."""
        collections: dict[str, Any] = {}
        missing = []
        for doc_id, kb_id in documents:
            collection = collections.setdefault(kb_id, self.sentences(kb_id))
            if not collection.get(where={"doc_id": doc_id}, limit=1, include=[])["ids"]:
                missing.append((doc_id, kb_id))
        with self._unfilled_lock:
            for doc_id, kb_id in missing:
                self._unfilled.setdefault(kb_id, set()).add(doc_id)
        return missing

    def similar(
        self, kb_id: str, vector: list[float], n: int, by_sentence: bool = True
    ) -> tuple[dict[str, float], dict[str, float]]:
        """The `n` passages closest to `vector`, and (`by_sentence`) the `n` whose closest
        sentence is, each with its cosine similarity."""
        with self._unfilled_lock:
            unfilled = set(self._unfilled.get(kb_id, ())) if by_sentence else set()
        # Each passage's document is read only while some document awaits its sentences.
        include = ["distances", "metadatas"] if unfilled else ["distances"]
        found = self.passages(kb_id).query(query_embeddings=[vector], n_results=n, include=include)
        passages = {c: 1.0 - d for c, d in zip(found["ids"][0], found["distances"][0], strict=True)}
        if not by_sentence:
            return passages, {}
        # A document not yet filled has no sentence to match: its passages stand for them, or
        # the documents already filled would outrank it by their sentences alone.
        best: dict[str, float] = {}
        if unfilled:
            for c, meta in zip(found["ids"][0], found["metadatas"][0], strict=True):
                if meta["doc_id"] in unfilled:
                    best[c] = passages[c]
        # A few sentences a passage: enough for `n` passages' best even where one has several.
        found = self.sentences(kb_id).query(
            query_embeddings=[vector], n_results=SENTENCES_PER_PASSAGE * n, include=["distances", "metadatas"]
        )
        if not found["ids"][0]:
            # Indexed by a version without sentences, not yet filled (`KnowledgeBases.schedule_sentences`),
            # perhaps by another box: each passage stands for its sentences.
            return passages, passages
        for meta, distance in zip(found["metadatas"][0], found["distances"][0], strict=True):
            best.setdefault(meta["chunk"], 1.0 - distance)  # nearest first
        return passages, dict(sorted(best.items(), key=lambda item: -item[1])[:n])


def sentences_of(passages: list[tuple[str, str, str | None]]) -> list[tuple[str, str]]:
    """(passage id, sentence under the passage's heading) for each sentence of (id, text, heading)."""
    return [(chunk_id, with_heading(s, heading)) for chunk_id, text, heading in passages for s in split_sentences(text)]


def _sentence_ids(sentences: list[tuple[str, str]]) -> list[str]:
    """`<passage id>/<n>`, n counted within the passage: the same entries whatever order the
    passages come in (two replicas filling one document upsert the same ids)."""
    seen: Counter[str] = Counter()
    ids = []
    for chunk_id, _ in sentences:
        ids.append(f"{chunk_id}/{seen[chunk_id]}")
        seen[chunk_id] += 1
    return ids


def _add(collection: Any, ids: list[str], vectors: list[list[float]], metadatas: list[dict[str, str]]) -> None:
    # In parts: Chroma refuses a batch over its maximum (5,461 in SQLite), a long book's
    # sentences. Upserted: two replicas filling the same document's sentences at start-up write
    # the same entries.
    for start in range(0, len(ids), CHROMA_BATCH):
        end = start + CHROMA_BATCH
        collection.upsert(ids=ids[start:end], embeddings=vectors[start:end], metadatas=metadatas[start:end])


def _collection_name(kb_id: str) -> str:
    # Chroma's names are narrower than our ids; a digest keeps them unique and valid.
    return "kb-" + hashlib.sha1(kb_id.encode()).hexdigest()[:20]


def chroma_client(data_dir: Path, host: str | None, port: int) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    if host:
        return chromadb.HttpClient(host=host, port=port, settings=settings)
    return chromadb.PersistentClient(path=str(data_dir / "chroma"), settings=settings)
