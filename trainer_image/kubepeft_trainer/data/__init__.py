"""Training data: fetch (s3/hub/path) -> records (jsonl/csv/parquet/hf, validated with file and row)
-> tokenized examples (text, promptResponse, chat templates; truncation, packing, split) -> batches."""

from kubepeft_trainer.data.build import TokenizedDataset, build_datasets, collate, split_records
from kubepeft_trainer.data.fetch import fetch_dataset
from kubepeft_trainer.data.records import load_records
from kubepeft_trainer.data.templates import tokenize_record

__all__ = [
    "TokenizedDataset",
    "build_datasets",
    "collate",
    "fetch_dataset",
    "load_records",
    "split_records",
    "tokenize_record",
]
