"""Read the records of an offline W&B run file (`run-<id>.wandb`) for tests.

The file is a 7-byte header (":W&B", magic 0xBEE1, version) followed by LevelDB-log framed
records in 32 KiB blocks (crc32 u32, length u16, type u8), each a protobuf `Record`.
"""
import struct

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32 * 1024, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path):
    data = open(path, "rb").read()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    pos, buf = HEADER, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        buf = chunk if kind in (FULL, FIRST) else buf + chunk
        if kind in (FULL, LAST):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


def config_and_history(path):
    """(config dict of JSON strings, list of history dicts of JSON strings) logged in a run file."""
    config, history = {}, []
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "config":
            config.update({u.key: u.value_json for u in r.config.update})
        elif kind == "run":
            config.update({u.key: u.value_json for u in r.run.config.update})
        elif kind == "history":
            history.append({(i.key or "/".join(i.nested_key)): i.value_json for i in r.history.item})
    return config, history
