"""YAML hygiene: duplicate keys refused with both lines, bounded size and alias expansion, UTF-8 or a
message naming the file, short excerpts in messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from csrgan.yaml_io import MAX_NODES, YAMLInputError, excerpt, load_yaml_file, load_yaml_text


def test_plain_documents_load_as_safe_load_would() -> None:
    text = "a: 1\nb: [x, 2.5, null]\nc: {d: true}\n"
    assert load_yaml_text(text, "t") == {"a": 1, "b": ["x", 2.5, None], "c": {"d": True}}


def test_duplicate_keys_are_refused_with_both_lines_at_any_depth() -> None:
    with pytest.raises(YAMLInputError, match=r"t: .*duplicate key 'p' \(first on line 3, again on line 5\)"):
        load_yaml_text("search:\n  parameters:\n    p: 1\n    q: 2\n    p: 3\n", "t")
    with pytest.raises(YAMLInputError, match="duplicate key 'a'"):
        load_yaml_text("- {a: 1, a: 2}\n", "t")


def test_anchors_aliases_and_merge_keys_still_work() -> None:
    text = "base: &b {lr: 1.0e-4, iters: 10}\nrun:\n  <<: *b\n  iters: 20\nalso: *b\n"
    got = load_yaml_text(text, "t")
    assert got["run"] == {"lr": 1e-4, "iters": 20} and got["also"] == {"lr": 1e-4, "iters": 10}


def test_an_alias_bomb_is_measured_not_expanded() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    with pytest.raises(YAMLInputError, match="expands") as info:
        load_yaml_text("\n".join(lines), "bomb.yaml")
    assert len(str(info.value)) < 300
    ok = "\n".join(lines[:4])  # 9**4 = 6561 leaves: fine
    assert MAX_NODES > 9**4
    assert len(load_yaml_text(ok, "t")["a3"]) == 9


def test_files_must_be_utf8_and_small(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(YAMLInputError, match=r"latin1\.yaml: not UTF-8 text \(byte 9, line 1"):
        load_yaml_file(bad)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: 1\n#" + b"x" * (2 << 20))
    with pytest.raises(YAMLInputError, match=r"big\.yaml: 2\.0 MiB"):
        load_yaml_file(big)


def test_syntax_errors_name_the_line_without_echoing_the_file() -> None:
    with pytest.raises(YAMLInputError, match=r"f\.yaml: not valid YAML: .*\(line \d+, column \d+\)") as info:
        load_yaml_text("a: 1\nb: [1, 2\n" + "#" * 5000, "f.yaml")
    assert len(str(info.value)) < 500


def test_excerpt_is_short_for_huge_values() -> None:
    assert len(excerpt("x" * 10_000)) <= 80
    assert len(excerpt(list(range(10_000)))) <= 80
    assert excerpt(0.5) == "0.5"
