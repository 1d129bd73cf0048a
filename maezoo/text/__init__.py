"""Text modality: BERT-style masked language modelling (Devlin et al., 1810.04805) on the one core.

Importing this package registers the ``text`` tokenizer (BERT's embeddings), the ``bert`` encoder, the ``bert_lm``
head, the ``bert``/``bert_tiny``/``bert_mini``/``bert_small``/``bert_base`` builders, the ``wordnet``,
``text_lines`` and ``text_jsonl`` datasets and the ``text`` visualiser. Word-piece vocabularies come from Hugging
Face's ``tokenizers`` (:mod:`maezoo.text.vocab`).
"""

from maezoo.text import data, models, visualize  # noqa: F401  (registers datasets, builders, the visualiser)
from maezoo.text.data import LEXNAMES, TextSamples, text_jsonl, text_lines, wordnet
from maezoo.text.models import HF_BERT_NAMES, BertEncoder, BertLMHead, bert, bert_base, bert_mini, bert_small, bert_tiny
from maezoo.text.tokenizer import TextTokenizer
from maezoo.text.vocab import SPECIAL_TOKENS, TextVocab, VocabError

__all__ = ["HF_BERT_NAMES", "LEXNAMES", "SPECIAL_TOKENS", "BertEncoder", "BertLMHead", "TextSamples", "TextTokenizer",
           "TextVocab", "VocabError", "bert", "bert_base", "bert_mini", "bert_small", "bert_tiny", "text_jsonl",
           "text_lines", "wordnet"]
