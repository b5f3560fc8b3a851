"""Training data (fetched by :mod:`kubepeft_trainer.sources`): records (jsonl/csv/parquet/hf,
validated with file and row) -> tokenized examples (text, promptResponse, chat templates;
truncation, split) -> padding-free packed rows (optional) -> batches."""

from kubepeft_trainer.data.batches import collate, count_tokens, model_inputs, uses_varlen_attention
from kubepeft_trainer.data.build import TokenizedDataset, build_datasets, split_records
from kubepeft_trainer.data.packing import pack
from kubepeft_trainer.data.records import load_records
from kubepeft_trainer.data.templates import tokenize_record

__all__ = [
    "TokenizedDataset",
    "build_datasets",
    "collate",
    "count_tokens",
    "load_records",
    "model_inputs",
    "pack",
    "split_records",
    "tokenize_record",
    "uses_varlen_attention",
]
