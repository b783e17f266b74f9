"""Knowledge bases: records in the database, vectors in Chroma (`kb.vectors`), keywords in memory.

Chunk texts and sources live in the database, so the keyword index can be rebuilt and a
deleted document leaves nothing behind. Ingestion runs in the background with progress; a failed ingestion removes
whatever it wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update

from app.core.db import ChunkRow, Database, DocumentRow, KnowledgeBaseRow, check_owner, claim_unfinished
from app.core.engines import Embedder
from app.core.errors import Conflict, InvalidInput, NotFound, TutorError
from app.core.events import KB_CHANGED, RESYNC, Events, OneBox
from kb.chunking import chunk_sections, with_heading
from kb.grounding import Grounder, Grounding
from kb.parsing import parse, sniff
from kb.passages import Passage
from kb.retrieval import DENSE_SPAN, Candidate, KeywordIndex, coverage, keywords, mostly_cjk, spread
from kb.vectors import VectorStore, embed_each, sentences_of

log = logging.getLogger(__name__)
KB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # the web backend names its own, e.g. kb-001
_KB_ID = re.compile(KB_ID_PATTERN)
# Candidates each side proposes for every passage wanted, and the span its scores are spread
# over. SQuAD 2.0 train, recall@5 with 4 and 8: seven articles 0.956 and 0.960, three others
# 0.927 and 0.924 (noise either way): the cheaper one.
PROPOSED = 4


@dataclass(frozen=True)
class KnowledgeBase:
    id: str
    name: str
    description: str
    created_at: dt.datetime
    documents: int = 0
    chunks: int = 0
    owner_id: int | None = None  # the teacher whose material it is; None: shared (the web backend's)


@dataclass(frozen=True)
class Document:
    id: str
    kb_id: str
    filename: str
    kind: str
    size: int
    status: str
    progress: float
    pages: int | None
    chunks: int
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


def _document(row: Any) -> Document:
    return Document(**{f.name: getattr(row, f.name) for f in dataclasses.fields(Document)})


class KnowledgeBases:
    def __init__(
        self,
        db: Database,
        embedder: Embedder,
        chroma: Callable[[], Any],
        files: Path,
        *,
        min_similarity: float,
        min_coverage: float,
        min_coverage_cjk: float,
        min_sentence_similarity: float,
        replica: str = "",
        events: Events | None = None,
    ) -> None:
        self._db = db
        self.replica = replica
        self._events = events or OneBox()
        self._events.subscribe(KB_CHANGED, self._changed_elsewhere)
        self._events.subscribe(RESYNC, lambda _message: self._forget_all_keywords())
        self.embedder = embedder
        self.vectors = VectorStore(chroma)
        self.files = files
        self.min_similarity = min_similarity
        self.min_coverage = min_coverage
        self.min_coverage_cjk = min_coverage_cjk
        self.min_sentence_similarity = min_sentence_similarity
        self.grounder = Grounder(embedder.embed)
        self._keywords: dict[str, KeywordIndex] = {}
        self._keyword_lock = threading.Lock()
        self._ingest_lock = asyncio.Lock()  # one ingestion at a time: embedding is CPU-bound
        self._tasks: set[asyncio.Task[None]] = set()

    # -- knowledge bases -------------------------------------------------------------------
    def create(
        self, name: str, description: str = "", kb_id: str | None = None, owner_id: int | None = None
    ) -> KnowledgeBase:
        kb_id = kb_id or f"kb-{uuid.uuid4().hex[:12]}"
        if not _KB_ID.match(kb_id):
            raise InvalidInput("a knowledge base id is 1-64 letters, digits, '.', '_' or '-'")
        with self._db.session() as db:
            if db.get(KnowledgeBaseRow, kb_id) is not None:
                raise Conflict(f"knowledge base {kb_id} already exists")
            check_owner(db, owner_id)
            db.add(KnowledgeBaseRow(id=kb_id, name=name, description=description, owner_id=owner_id))
        return self.get(kb_id)

    def get(self, kb_id: str) -> KnowledgeBase:
        with self._db.session() as db:
            row = db.get(KnowledgeBaseRow, kb_id)
            if row is None:
                raise NotFound(f"knowledge base {kb_id} does not exist")
            documents = db.scalar(select(func.count()).where(DocumentRow.kb_id == kb_id)) or 0
            chunks = db.scalar(select(func.count()).where(ChunkRow.kb_id == kb_id)) or 0
            return KnowledgeBase(row.id, row.name, row.description, row.created_at, documents, chunks, row.owner_id)

    def list(self, owner_id: int | None = None) -> list[KnowledgeBase]:
        """All knowledge bases, or one teacher's."""
        query = select(KnowledgeBaseRow.id).order_by(KnowledgeBaseRow.created_at)
        if owner_id is not None:
            query = query.where(KnowledgeBaseRow.owner_id == owner_id)
        with self._db.session() as db:
            ids = list(db.scalars(query))
        return [self.get(kb_id) for kb_id in ids]

    def delete(self, kb_id: str) -> None:
        for document in self.documents(kb_id):
            (self.files / document.id).unlink(missing_ok=True)
        self.vectors.drop(kb_id)
        with self._db.session() as db:
            db.execute(delete(ChunkRow).where(ChunkRow.kb_id == kb_id))
            db.execute(delete(DocumentRow).where(DocumentRow.kb_id == kb_id))
            db.execute(delete(KnowledgeBaseRow).where(KnowledgeBaseRow.id == kb_id))
        self._forget_keywords(kb_id)

    # -- documents -----------------------------------------------------------------------
    def add_document(self, kb_id: str, filename: str, data: bytes) -> Document:
        """Check and record an upload; `ingest` does the slow part."""
        self.get(kb_id)
        kind = sniff(data, filename)
        digest = hashlib.sha256(data).hexdigest()
        with self._db.session() as db:
            twin = db.scalar(
                select(DocumentRow).where(
                    DocumentRow.kb_id == kb_id, DocumentRow.sha256 == digest, DocumentRow.status != "failed"
                )
            )
            if twin is not None:
                raise Conflict(f"{filename} is already indexed in {kb_id} as document {twin.id} ({twin.filename})")
            row = DocumentRow(
                id=str(uuid.uuid4()),
                kb_id=kb_id,
                filename=filename,
                kind=kind,
                sha256=digest,
                size=len(data),
                replica=self.replica,
            )
            # The original is kept: re-indexing (a new embedding model) and a restart mid-ingestion need it.
            self.files.mkdir(parents=True, exist_ok=True)
            (self.files / row.id).write_bytes(data)
            db.add(row)
            db.flush()
            return _document(row)

    def documents(self, kb_id: str) -> list[Document]:
        self.get(kb_id)
        with self._db.session() as db:
            rows = db.scalars(select(DocumentRow).where(DocumentRow.kb_id == kb_id).order_by(DocumentRow.created_at))
            return [_document(r) for r in rows]

    def headings(self, kb_ids: list[str], longest: int = 40) -> list[str]:
        """The material's section headings, each once, as they come in its documents: the
        course's topics (a heading over `longest` characters reads as a sentence, not a term)."""
        if not kb_ids:
            return []
        first = func.min(ChunkRow.ordinal)
        with self._db.session() as db:
            rows = db.execute(
                select(ChunkRow.heading, first)
                .where(ChunkRow.kb_id.in_(kb_ids), ChunkRow.heading.is_not(None))
                .group_by(ChunkRow.heading)
                .order_by(first, ChunkRow.heading)
            ).all()
        return [heading for heading, _ in rows if len(heading) <= longest]

    def document(self, kb_id: str, doc_id: str) -> Document:
        with self._db.session() as db:
            row = db.get(DocumentRow, doc_id)
            if row is None or row.kb_id != kb_id:
                raise NotFound(f"document {doc_id} is not in {kb_id}")
            return _document(row)

    def delete_document(self, kb_id: str, doc_id: str) -> None:
        """Gone at once, even mid-ingestion: its rows in one transaction (an ingestion that
        finishes later finds no document to add chunks to, and cleans up after itself)."""
        self.document(kb_id, doc_id)
        with self._db.session() as db:
            db.execute(delete(ChunkRow).where(ChunkRow.doc_id == doc_id))
            db.execute(delete(DocumentRow).where(DocumentRow.id == doc_id))
        self._remove_chunks(kb_id, doc_id)
        (self.files / doc_id).unlink(missing_ok=True)

    def unfinished(self) -> list[str]:
        """Documents a restart of this replica interrupted: queued or mid-ingestion. Only the
        box that took an upload holds its file, so only that one ingests it; one box takes
        all, and of replicas only one takes those from before replicas had names."""
        return claim_unfinished(self._db, DocumentRow, DocumentRow.status.in_(("queued", "ingesting")), self.replica)

    def schedule(self, doc_id: str) -> None:
        """Ingest in the background (call on the event loop); progress shows on the document."""
        self._background(self._ingest_in_background(doc_id), f"ingest-{doc_id}")

    def schedule_sentences(self) -> None:
        """Embed, in the background, the sentences of documents indexed before passages' sentences were."""
        self._background(self._sentences_in_background(), "kb-sentences")

    def _background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)  # kept until done (the loop holds tasks weakly), cancelled by `close`
        task.add_done_callback(self._tasks.discard)

    async def _sentences_in_background(self) -> None:
        try:
            missing = await asyncio.to_thread(self._without_sentences)
        except Exception:  # e.g. the Chroma server is down: searched by passages until the next start
            log.exception("finding the documents indexed before sentences were failed")
            return
        filled = 0
        for doc_id, kb_id in missing:
            try:
                async with self._ingest_lock:  # a document at a time: an upload waits for one, not all
                    await asyncio.to_thread(self._fill_sentences, doc_id, kb_id)
                filled += 1
            except Exception:
                log.exception("embedding the sentences of document %s failed", doc_id)
        if missing:
            log.info("embedded the sentences of %d of %d older document(s)", filled, len(missing))

    def _without_sentences(self) -> list[tuple[str, str]]:
        """(document, knowledge base) of each ready document with no sentence in the index."""
        with self._db.session() as db:
            documents = db.execute(
                select(DocumentRow.id, DocumentRow.kb_id).where(DocumentRow.status == "ready", DocumentRow.chunks > 0)
            ).all()
        return self.vectors.without_sentences([(doc_id, kb_id) for doc_id, kb_id in documents])

    def _fill_sentences(self, doc_id: str, kb_id: str) -> None:
        """A document's sentences from its stored passages (no parsing again)."""
        with self._db.session() as db:
            rows = db.execute(
                select(ChunkRow.id, ChunkRow.text, ChunkRow.heading).where(ChunkRow.doc_id == doc_id)
            ).all()
        sentences = sentences_of([(chunk_id, text, heading) for chunk_id, text, heading in rows])
        vectors = embed_each(self.embedder.embed, [text for _, text in sentences])
        self.vectors.add_sentences(kb_id, doc_id, sentences, vectors)
        with self._db.session() as db:
            # Deleted meanwhile (deletion does not wait for the ingestion lock): leave nothing behind.
            if db.get(KnowledgeBaseRow, kb_id) is None:
                self.vectors.drop(kb_id)
            elif db.get(DocumentRow, doc_id) is None:
                self.vectors.remove(kb_id, doc_id)

    async def _ingest_in_background(self, doc_id: str) -> None:
        try:
            await self.ingest(doc_id)
        except NotFound as gone:  # deleted before or while it was indexed: nothing to do
            log.info("not indexed: %s", gone.message)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def ingest(self, doc_id: str, on_progress: Callable[[float], None] | None = None) -> Document:
        async with self._ingest_lock:
            return await asyncio.to_thread(self._ingest, doc_id, on_progress)

    def _ingest(self, doc_id: str, on_progress: Callable[[float], None] | None) -> Document:
        with self._db.session() as db:
            row = db.get(DocumentRow, doc_id)
            if row is None:
                raise NotFound(f"document {doc_id} does not exist")
            kb_id, filename = row.kb_id, row.filename
        data = (self.files / doc_id).read_bytes()
        # A retry or re-index starts clean: no chunk of an earlier attempt survives.
        self._remove_chunks(kb_id, doc_id)

        def progress(value: float, **fields: Any) -> None:
            with self._db.session() as db:
                db.execute(update(DocumentRow).where(DocumentRow.id == doc_id).values(progress=value, **fields))
            if on_progress:
                on_progress(value)

        progress(0.05, status="ingesting", error=None)
        try:
            _kind, sections = parse(data, filename)
            pages = max((s.page or 0 for s in sections), default=0) or None
            chunks = chunk_sections(sections)
            progress(0.15, pages=pages)
            ids = [f"{doc_id}:{n}" for n in range(len(chunks))]
            texts = [with_heading(c.text, c.heading) for c in chunks]
            sentences = sentences_of([(i, c.text, c.heading) for i, c in zip(ids, chunks, strict=True)])
            vectors = embed_each(
                self.embedder.embed, texts + [t for _, t in sentences], lambda done: progress(0.15 + 0.75 * done)
            )
            self.vectors.add_passages(kb_id, doc_id, ids, [vectors[t] for t in texts])
            self.vectors.add_sentences(kb_id, doc_id, sentences, vectors)
            with self._db.session() as db:
                db.add_all(
                    ChunkRow(id=i, doc_id=doc_id, kb_id=kb_id, ordinal=n, text=c.text, page=c.page, heading=c.heading)
                    for n, (i, c) in enumerate(zip(ids, chunks, strict=True))
                )
            self._forget_keywords(kb_id)
            progress(1.0, status="ready", chunks=len(chunks))
        except Exception as exc:
            # Leave nothing half-written: a failed document has no chunks anywhere.
            self._remove_chunks(kb_id, doc_id)
            with self._db.session() as db:
                if db.get(DocumentRow, doc_id) is None:
                    raise NotFound(f"document {doc_id} was deleted while it was being indexed") from exc
            reason = exc.message if isinstance(exc, TutorError) else f"ingestion failed: {exc}"
            if not isinstance(exc, TutorError):
                log.exception("ingesting %s failed", filename)
            progress(0.0, status="failed", error=reason, chunks=0)
        return self.document(kb_id, doc_id)

    def requeue(self, kb_id: str, doc_id: str) -> Document:
        """Mark a document for re-indexing from its stored original; `ingest` does the work."""
        self.document(kb_id, doc_id)
        with self._db.session() as db:
            db.execute(update(DocumentRow).where(DocumentRow.id == doc_id).values(status="queued", progress=0.0))
        return self.document(kb_id, doc_id)

    # -- search --------------------------------------------------------------------------
    def existing(self, kb_ids: list[str]) -> list[str]:
        """Those of `kb_ids` that exist: a tutor may name one not made yet, or deleted."""
        if not kb_ids:
            return []
        with self._db.session() as db:
            known = set(db.scalars(select(KnowledgeBaseRow.id).where(KnowledgeBaseRow.id.in_(kb_ids))))
        return [k for k in kb_ids if k in known]

    def search(self, kb_ids: list[str], query: str, k: int = 5, vector: list[float] | None = None) -> list[Passage]:
        """The best `k` passages across `kb_ids` that clear the relevance threshold (`vector`:
        the query's embedding, where the caller has it)."""
        query = query.strip()
        if not query or not kb_ids:
            return []
        wanted = keywords(query)
        if vector is None:
            vector = self.embedder.embed([query])[0]
        chinese = mostly_cjk(query)
        trust_dense = self._trust_dense(chinese)
        candidates: dict[str, Candidate] = {}

        def note(chunk_id: str, **scores: float) -> None:
            candidates[chunk_id] = dataclasses.replace(candidates.get(chunk_id, Candidate(chunk_id)), **scores)

        for kb_id in kb_ids:
            index = self._keyword_index(kb_id)
            if not index.ids:  # empty, or a knowledge base that does not exist (no collection made)
                continue
            similar, sentences = self.vectors.similar(kb_id, vector, min(PROPOSED * k, len(index.ids)), trust_dense)
            matched = {index.ids[n]: score for n, score in index.bm25.top(wanted, PROPOSED * k)}
            for chunk_id, spread_out in spread(similar, DENSE_SPAN).items():
                note(chunk_id, dense=similar[chunk_id], dense_spread=spread_out)
            # A sentence outliving its passage (a document deleted while its sentences were
            # being filled) must not vouch for anything.
            sentences = {c: v for c, v in sentences.items() if c in index.position}
            for chunk_id, spread_out in spread(sentences, DENSE_SPAN).items():
                note(chunk_id, sentence=sentences[chunk_id], sentence_spread=spread_out)
            for chunk_id, spread_out in spread(matched).items():
                note(chunk_id, keyword_spread=spread_out)
            for chunk_id in candidates:
                if (n := index.position.get(chunk_id)) is not None:
                    note(chunk_id, coverage=coverage(wanted, index.terms[n]))
        threshold = self.min_similarity if trust_dense else None
        ranked = sorted(candidates.values(), key=lambda c: (-c.fused(trust_dense), -c.coverage))  # ties: across KBs
        # The thresholds decide whether the material covers the question at all; once one
        # passage clears them, the best-ranked `k` go to the model (a passage below them can
        # still hold the answer: on SQuAD 2.0 this gate keeps recall@5 near the ranking's own).
        min_coverage = self.min_coverage_cjk if chinese else self.min_coverage
        if not any(c.relevant(threshold, min_coverage, self.min_sentence_similarity) for c in ranked):
            return []
        return self._passages(ranked[:k], trust_dense)

    def ground(self, kb_ids: list[str], question: str, k: int = 5) -> Grounding:
        """What these knowledge bases say to the question: the evidence, or why there is none."""
        # Embedded once, for the search and the grounder both: this is on every turn's way to its answer.
        vector = self.embedder.embed([question.strip()])[0] if question.strip() and kb_ids else None
        passages = self.search(kb_ids, question, k, vector)
        rarity = self.rarity(kb_ids) if passages else None
        return self.grounder.ground(question, passages, rarity, self._trust_dense(mostly_cjk(question)), vector)

    def _trust_dense(self, chinese: bool) -> bool:  # do the model's similarities mean anything here?
        return self.embedder.multilingual or not chinese

    def rarity(self, kb_ids: list[str]) -> Callable[[str], float]:
        """How rare a keyword is in these knowledge bases (BM25's idf); unseen words are the
        rarest of all."""
        indexes = [self._keyword_index(kb_id).bm25 for kb_id in kb_ids]
        unseen = max((math.log(1 + (len(i.lengths) + 0.5) / 0.5) for i in indexes), default=1.0)
        return lambda term: max((i.idf[term] for i in indexes if term in i.idf), default=unseen)

    def _passages(self, chosen: list[Candidate], trust_dense: bool) -> list[Passage]:
        if not chosen:
            return []
        with self._db.session() as db:
            rows = db.execute(
                select(
                    ChunkRow.id, ChunkRow.text, ChunkRow.page, ChunkRow.heading, DocumentRow.filename, DocumentRow.id
                )
                .join(DocumentRow, DocumentRow.id == ChunkRow.doc_id)
                .where(ChunkRow.id.in_([c.chunk_id for c in chosen]))
            ).all()
        by_id = {r[0]: r for r in rows}
        passages = []
        for candidate in chosen:
            row = by_id.get(candidate.chunk_id)
            if row is None:
                continue
            source: dict[str, Any] = {"document": row[4], "document_id": row[5]}
            if row[2] is not None:
                source["page"] = row[2]
            if row[3]:
                source["section"] = row[3]
            passages.append(Passage(row[1], round(candidate.score(trust_dense), 4), source, candidate.chunk_id))
        return passages

    # -- indexes -------------------------------------------------------------------------
    def _remove_chunks(self, kb_id: str, doc_id: str) -> None:
        self.vectors.remove(kb_id, doc_id)
        with self._db.session() as db:
            db.execute(delete(ChunkRow).where(ChunkRow.doc_id == doc_id))
            db.execute(update(DocumentRow).where(DocumentRow.id == doc_id).values(chunks=0))
        self._forget_keywords(kb_id)

    def _forget_keywords(self, kb_id: str) -> None:
        """The knowledge base's chunks changed here: rebuild its keyword index on next use,
        here and on every other replica."""
        with self._keyword_lock:
            self._keywords.pop(kb_id, None)
        self._events.publish(KB_CHANGED, kb_id=kb_id)

    def _changed_elsewhere(self, message: dict[str, Any]) -> None:
        with self._keyword_lock:
            self._keywords.pop(message["kb_id"], None)
        self._drop_orphan_files()

    def _drop_orphan_files(self) -> None:
        """Originals this box keeps of documents another box deleted. Only older ones: a file
        is written just before its document's row is committed."""
        cutoff, old = time.time() - 60, []
        for path in self.files.glob("*"):
            with contextlib.suppress(FileNotFoundError):  # deleted here meanwhile
                if path.stat().st_mtime < cutoff:
                    old.append(path)
        if not old:
            return
        with self._db.session() as db:
            kept = set(db.scalars(select(DocumentRow.id).where(DocumentRow.id.in_([p.name for p in old]))))
        for path in old:
            if path.name not in kept:
                path.unlink(missing_ok=True)

    def _forget_all_keywords(self) -> None:
        with self._keyword_lock:
            self._keywords.clear()

    def _keyword_index(self, kb_id: str) -> KeywordIndex:
        with self._keyword_lock:
            index = self._keywords.get(kb_id)
            if index is None:
                with self._db.session() as db:
                    rows = db.execute(
                        select(ChunkRow.id, ChunkRow.text, ChunkRow.heading).where(ChunkRow.kb_id == kb_id)
                    ).all()
                terms = [keywords(with_heading(text, heading)) for _, text, heading in rows]
                index = KeywordIndex([r[0] for r in rows], terms)
                self._keywords[kb_id] = index
            return index
