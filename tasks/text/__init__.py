"""Shared data layer for the text task families (sentiment, tagging, language modelling, translation).

Everything here is plain functions/classes that a family composes; nothing is family specific.
One module per concern: `parsers` (local files: opening, checking, formats), `config` (shared
fields), `sources` (hub and local files -> splits), `tokens`, `vocab`, `labels` (labels unseen in
training), `vectors` (pretrained word vectors), `batching` (bucketing sampler, padding, masks),
`datamodule` (the LightningDataModule base); this package
re-exports their public names, so a family writes `from tasks import text` and `text.pad(...)`.

Data sources  -- one `datasets.load_dataset` code path for the hub and for local files
-----------------------------------------------------------------------------------------
`load_splits(cfg, path="task.") -> datasets.DatasetDict` with the splits "train", "validation",
"test" (validation carved from train with `cfg.data_seed` when the source has none). `cfg` is any
object with the fields of `TextDataConfig` (a family's Config usually subclasses it):

* local files when `cfg.data_dir` or the env var `RNNBENCH_DATA` is set AND `cfg.data_files` is
  non-empty. `cfg.data_files` maps our split names to a path (or list of paths) relative to the
  data dir (absolute paths also work). `cfg.format` is either a `datasets` builder
  ("text", "json", "csv", "parquet") or a parser from `PARSERS` ("label_text", "conllu", "conll";
  add one with `register_parser`), run through `datasets.Dataset.from_generator` -- so both the
  hub and every local format end in the same columns and both are cached by `datasets`.
* otherwise the hub data set `cfg.dataset` (`cfg.hub_config`, `cfg.hub_revision`), with
  `cfg.splits` mapping our split names to the hub's split names.
* ClassLabel columns (and sequences of ClassLabel) are turned into their string names, so hub
  and local data give the same label strings.
* `cfg.max_train` / `cfg.max_eval` keep the first N examples of a split (tests, reduced runs);
  with `cfg.subsample == "random"` N examples drawn with `cfg.data_seed` instead.
* Errors are one line: a missing file raises `ConfigError("task.data_files.train: file X not
  found; expected <format help>")`, a malformed one `ValueError("X line 3: malformed ...;
  expected <format help>")`, a missing column `ConfigError("task.text_column: ...")`.

Tokens  -- `tokenize(value, mode, lowercase)`; modes "whitespace", "basic" (regex words and
punctuation, strips `<br />`), "chars", "none" (the column already holds a token list).
`token_column(ds, column, mode, lowercase, max_len)` does it with a cached `Dataset.map`;
`column_list(ds, name)` gives a column as a plain list (fast).

Vocabulary  -- `Vocab.build(token_lists, min_freq=1, max_size=None, specials=(PAD, UNK), unk=UNK)`
(train split only: the caller passes only train tokens), `Vocab.labels(values)` for label sets
(no specials, sorted), `char_vocab(token_lists)`. `v.encode(tokens) -> list[int]`,
`v.decode(ids)`, `v[token]`, `len(v)`, `v.pad_id`, `v.unk_id`, `v.itos`. `v.to_dict()` is plain
dicts/lists/strings (safe for `torch.load(weights_only=True)`); `Vocab.from_dict(d)` restores.

Word vectors  -- `init_embedding(embed, vocab, path, freeze)` starts the rows of the training-vocab
words from a GloVe / word2vec text file (`rnnbench vectors` makes one with gensim). A family gets
`task.embeddings` / `task.freeze_embeddings` by subclassing `WordVectorsConfig` and `WordVectorsTask`.

Batches  -- `BucketBatchSampler(lengths, batch_size, shuffle, seed, pool=50)`: batches of similar
lengths, a pure function of (seed, epoch) (`set_epoch`, called by Lightning every epoch), sharded
over ranks when torch.distributed is initialised. `pad(seqs, value) -> (B, T) tensor, lengths`;
`lengths_to_mask(lengths, T) -> (B, T) bool`. Padding never changes a result as long as the model
gets `lengths` (models.recurrent.Recurrent does) and losses/metrics use the mask.

`TextDataModule(cfg, seed, num_workers)` -- LightningDataModule base: `setup()` (idempotent) calls `load_splits` then the
subclass's `build(raw)` which must fill `self.examples[split]` (list of dicts) and
`self.lengths[split]` (list of ints) and `self.vocabs` (name -> Vocab); it provides bucketed
loaders using `self.collate`, and `state_dict()` = {"vocabs": {name: vocab.to_dict()}} so the
vocabularies travel inside Lightning checkpoints.
"""
from tasks.text.batching import BucketBatchSampler, ListDataset, last_valid, lengths_to_mask, pad
from tasks.text.config import TextDataConfig
from tasks.text.datamodule import TextDataModule
from tasks.text.labels import LabelsConfig, handle_unseen
from tasks.text.parsers import (BUILDERS, CONLLU_FIELDS, FORMAT_HELP, PARSERS, check_file, open_text, parse_conll,
                                parse_conllu, parse_label_text, register_parser)
from tasks.text.sources import (ENV_DATA, carve_test, check_files, class_labels_to_names, column_list, load_splits,
                                local_root, resolve_files, sources)
from tasks.text.tokens import token_column, tokenize
from tasks.text.vectors import VECTORS_HELP, WordVectorsConfig, WordVectorsTask, init_embedding, load_vectors
from tasks.text.vocab import BOS, EOS, PAD, UNK, Vocab, char_vocab

__all__ = ["BOS", "BUILDERS", "CONLLU_FIELDS", "ENV_DATA", "EOS", "FORMAT_HELP", "PAD", "PARSERS", "UNK",
           "VECTORS_HELP", "BucketBatchSampler", "LabelsConfig", "ListDataset", "TextDataConfig", "TextDataModule",
           "Vocab", "WordVectorsConfig", "WordVectorsTask", "carve_test", "char_vocab", "check_file", "check_files",
           "class_labels_to_names", "column_list", "handle_unseen", "init_embedding", "last_valid",
           "lengths_to_mask", "load_splits", "load_vectors", "local_root", "open_text", "pad", "parse_conll",
           "parse_conllu", "parse_label_text", "register_parser", "resolve_files", "sources", "token_column",
           "tokenize"]
