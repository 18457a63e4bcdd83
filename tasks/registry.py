"""The one registry of task families. A new data set for a family is config only (bench/configs/task)."""
from __future__ import annotations

import importlib

TASKS: dict[str, str] = {
    "copy": "tasks.synthetic:CopyTask",
    "adding": "tasks.synthetic:AddingTask",
    "running_sum": "tasks.synthetic:RunningSumTask",
    "lm": "tasks.lm:LMTask",
    "translation": "tasks.translation:TranslationTask",
    "sentiment": "tasks.sentiment:SentimentTask",
    "tagging": "tasks.tagging:TaggingTask",
    "timeseries": "tasks.timeseries:TimeSeriesTask",
    "pixels": "tasks.pixels:PixelTask",
    "one_to_many": "tasks.one_to_many:OneToManyTask",
    "sentence_lm": "tasks.sentence_lm:SentenceLMTask",
    "treebank": "tasks.treebank:TreebankTask",
}


def task_class(name: str):
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)
