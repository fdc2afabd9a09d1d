from fruits_assets.cli import main


def test_a_field_root_without_the_feedback_split_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "field" / "val" / "Kiwi").mkdir(parents=True)
    code = main(["bench", "field", str(tmp_path / "field"), "--feedback", "--images-root", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"fruits: error: no split folder {tmp_path / 'field' / 'train'} (the field root must hold 'train' and 'val')"
    )
