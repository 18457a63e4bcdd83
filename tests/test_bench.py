"""The benchmark entry points run end to end on tiny sizes and print their tables (figures are
measured by running them, not here)."""
import re

import pytest

from bench.benchmarks import cells as bench_cells, harness as bench_harness, scaling as bench_scaling, small as bench_small


def rows(text: str, first: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith(f"| {first}")]


def test_bench_cells_times_every_path_against_its_reference(capsys):
    bench_cells.main(["--batch", "2", "--T", "3", "--hidden", "4", "--repeats", "1",
                      "--cells", "lstm,lstm_cifg,gru"])
    out = capsys.readouterr().out
    for cell in ("lstm", "lstm_cifg", "gru"):
        assert re.search(rf"^\| {cell} \| custom \|.*\d+\.\d+x", out, re.M), out


def test_bench_small_prints_every_path_against_fused_lstm(capsys, monkeypatch):
    monkeypatch.setattr(bench_small, "SHAPES", [("tiny", 4, 3, 2, 2)])
    bench_small.main(["--quick", "--repeats", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    table = rows(out, "tiny (4, 3, 2, 2)")
    assert [(r[1], r[2]) for r in table] == [(c, p) for c, p, _ in bench_small.ENTRIES]
    assert table[0][4] == "1.00x" and table[0][9] == "<-"          # the reference, auto for lstm
    for r in table:
        assert re.fullmatch(r"\d+\.\d\dx", r[4]) and re.fullmatch(r"\d+\.\d\dx", r[6]), r
    assert rows(out, "tiny | custom LSTM variants except FGR") and rows(out, "tiny | gru (auto path)")


def test_bench_cells_rejects_an_unknown_cell():
    with pytest.raises(SystemExit, match="--cells: unknown cell 'nope'; allowed: .*lstm"):
        bench_cells.main(["--cells", "nope"])


def test_bench_scaling_memory_grows_with_T_in_training_only(capsys):
    bench_scaling.main(["--cells", "lstm", "--T", "4,8,16", "--batch", "2", "--hidden", "4",
                        "--input", "3", "--chunk", "4", "--repeats", "1"])
    fits = {r[1]: r for r in rows(capsys.readouterr().out, "lstm") if len(r) == 8}
    assert float(fits["train"][6]) > 0            # saved-for-backward MB per step of T
    assert float(fits["stream"][4]) == 0          # streaming peak memory is flat in T


def test_bench_harness_compares_fused_kernel_bare_loop_and_lightning(capsys):
    bench_harness.main(["--shape", "default", "--steps", "3", "--warmup", "1", "--repeats", "1",
                        "model.hidden_size=8", "task.T=5", "task.batch_size=4", "task.eval_size=8"])
    out = capsys.readouterr().out
    (row,) = rows(out, "default:")
    fused, bare, light, light_bare, bare_fused = map(float, row[1:])
    assert min(fused, bare, light) > 0
    assert abs(light_bare - light / bare) < 0.05 * light_bare and abs(bare_fused - bare / fused) < 0.05 * bare_fused



def test_bench_scaling_feedback_jordan_teacher_forced_has_no_serial_steps(capsys):
    bench_scaling.main(["--feedback", "--T", "4,8", "--batch", "2", "--hidden", "4", "--input", "3",
                        "--classes", "5", "--repeats", "1"])
    out = capsys.readouterr().out
    serial = {(int(r[0]), r[1]): int(r[2]) for r in rows(out, "") if len(r) == 8 and r[0].isdigit()}
    assert serial == {(T, m): (1 if m == "jordan h(x,y*)" else T)
                      for T in (4, 8) for m in ("jordan h(x,y*)", "rnn h(x,s,y*)", "jordan h(x,y^)")}
