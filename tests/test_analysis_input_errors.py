"""Bad analysis input is one line and exit code 2, never a traceback (#26 item 12): a CSV with two
columns of one name, and a word among the numbers of a numeric column."""

import argparse

import pytest

from analysis.cli import register


def run(*argv):
    parser = argparse.ArgumentParser(prog="scaling")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def _csv(path, header, bad=None):
    """A small lr x batch x n_train grid with a test_loss; ``bad`` replaces one lr value."""
    rows = [header]
    for i, n in enumerate((100, 200, 400, 800)):
        for j, b in enumerate((8, 16, 32)):
            for k, lr in enumerate((0.05, 0.1, 0.2)):
                loss = 1 + 5 * n ** -0.5 + 0.01 * (j - 1) ** 2 + 0.02 * (k - 1) ** 2
                lr_text = bad if (bad and i == 1 and j == 2 and k == 0) else lr
                rows.append(f"{n},{n},{lr_text},{b},{loss:.6f},{n * 1000}")
    path.write_text("\n".join(rows) + "\n")
    return path


COMMANDS = {
    "fit": ("fit", "--x", "n_train", "--boot", "20"),
    "bopt": ("bopt", "--boot", "0"),
    "fit-joint": ("fit-joint", "--n", "n_params", "--d", "n_train", "--boot", "20"),
    "report": ("report",),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_duplicate_column_name_is_one_line(tmp_path, capsys, command):
    path = _csv(tmp_path / "dup.csv", "n_train,n_train,lr,batch_size,test_loss,n_params")
    name, *rest = COMMANDS[command]
    extra = ("--output", tmp_path / "r.html") if command == "report" else ()
    assert run(name, path, *rest, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "'n_train' is columns 1, 2" in err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_word_in_a_numeric_column_is_one_line_naming_the_row(tmp_path, capsys, command):
    path = _csv(tmp_path / "word.csv", "n_train,n_copy,lr,batch_size,test_loss,n_params", bad="abc")
    name, *rest = COMMANDS[command]
    extra = ("--output", tmp_path / "r.html") if command == "report" else ()
    assert run(name, path, *rest, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    # the bad value sits at n_train 200 (i = 1), batch 32 (j = 2), the first lr: row 9 + 6 + 1
    assert "column 'lr'" in err and "row 16 'abc'" in err


def test_a_text_axis_of_words_is_a_category_not_a_typo(tmp_path, capsys):
    """optimizer = adam, sgd is left alone: only a column of numbers with a few words is refused."""
    import pyarrow as pa

    from analysis.tables.load import check_numbers

    check_numbers(pa.table({"optimizer": ["adam", "sgd", "adam"], "lr": [0.1, 0.2, 0.3]}),
                  ["optimizer", "lr"])
    with pytest.raises(Exception, match="row 3 'x'"):
        check_numbers(pa.table({"lr": ["0.1", "0.2", "x"]}))
