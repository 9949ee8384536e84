"""The query classifier and what follows from its class: a profile (sampling options) and a compaction
budget. Rules by default, nearest centroid over MiniLM embeddings on request; prompt counts in the
upstream's own tokens where it offers its tokenizer."""

from middleware.classify.compact import Compact
from middleware.classify.config import ClassifierConfig, Profile, parse_classifier
from middleware.classify.scorer import Classifier, Classify, RuleScorer, build_classifier
from middleware.classify.tokens import TokenCounter, Tokenizer

__all__ = [
    "Classifier",
    "ClassifierConfig",
    "Classify",
    "Compact",
    "Profile",
    "RuleScorer",
    "TokenCounter",
    "Tokenizer",
    "build_classifier",
    "parse_classifier",
]
