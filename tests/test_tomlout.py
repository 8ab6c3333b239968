"""Writing TOML (fingerd/tomlout.py): what `fingerd check --dump` prints reads back as the same
values, and holds no character a terminal would act on."""

from __future__ import annotations

import tomllib

from hypothesis import given
from hypothesis import strategies as st

from fingerd import tomlout

VALUES = st.recursive(
    st.none().map(lambda _: "") | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children,
                                                                       max_size=4),
    max_leaves=12)


@given(st.dictionaries(st.text(min_size=1), VALUES, max_size=6))
def test_a_table_reads_back_as_written_and_prints_only_printable_characters(
        table: dict[str, object]) -> None:
    """Any table of strings, numbers, booleans, arrays and tables: tomllib reads the text back
    to the same values, and the text has no control, C1 or bidi character (escaped)."""
    text = "\n".join(tomlout.table("", table)) + "\n"
    assert tomllib.loads(text) == table
    assert all(c == "\n" or c.isprintable() for c in text)
