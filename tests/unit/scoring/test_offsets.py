"""tile_offsets, offsets_from_bytes, shares_a_character and utf8_length."""

from __future__ import annotations

import itertools

import pytest

from service.scoring.offsets import (
    offsets_from_bytes,
    shares_a_character,
    tile_offsets,
    utf8_length,
)


def _assert_tiles(tiled: list[tuple[int, int]], text_length: int) -> None:
    assert tiled, "non-empty input gives non-empty tiling"
    assert tiled[0][0] == 0
    assert tiled[-1][1] == text_length
    for (_, prev_end), (start, _) in itertools.pairwise(tiled):
        assert start == prev_end
    for start, end in tiled:
        assert 0 <= start <= end <= text_length


def test_overlapping_offsets_give_chars_to_the_last_token() -> None:
    offsets = [(0, 5), (5, 7), (12, 14), (13, 14)]
    tiled = tile_offsets(offsets, 14)
    assert tiled == [(0, 5), (5, 7), (7, 13), (13, 14)]
    _assert_tiles(tiled, 14)


def test_byte_level_split_character_goes_to_the_token_completing_it() -> None:
    # "a€b": the euro sign is split across two byte-level tokens that both report it.
    text = "a€b"
    tiled = tile_offsets([(0, 1), (1, 2), (1, 2), (2, 3)], len(text))
    assert tiled == [(0, 1), (1, 1), (1, 2), (2, 3)]
    assert "".join(text[s:e] for s, e in tiled) == text


def test_a_token_ending_inside_a_character_keeps_its_whole_characters() -> None:
    # "昨天": bytes [昨 + first byte of 天] then [the rest of 天].
    assert tile_offsets([(0, 2), (1, 2)], 2) == [(0, 1), (1, 2)]
    # A zero-width special token between them does not hide the overlap.
    assert tile_offsets([(0, 2), (2, 2), (1, 2)], 2) == [(0, 1), (1, 1), (1, 2)]


@pytest.mark.parametrize(
    ("offsets", "shared"),
    [
        ([], False),
        ([(0, 1), (1, 2), (2, 3)], False),
        ([(0, 0), (0, 3), (0, 0), (3, 5)], False),  # special tokens are zero-width
        ([(0, 5), (8, 13)], False),  # gaps are not overlaps
        ([(0, 1), (1, 2), (1, 2), (2, 3)], True),
        ([(0, 2), (2, 2), (1, 2)], True),
    ],
)
def test_shares_a_character(offsets: list[tuple[int, int]], shared: bool) -> None:
    assert shares_a_character(offsets) is shared


@pytest.mark.parametrize(
    ("text", "byte_lengths", "expected"),
    [
        ("abc", [1, 2], [(0, 1), (1, 3)]),
        ("a€b", [1, 1, 2, 1], [(0, 1), (1, 1), (1, 2), (2, 3)]),
        ("昨天", [4, 2], [(0, 1), (1, 2)]),  # 昨 and the first byte of 天, then the rest
        ("\U0001d538", [2, 1, 1], [(0, 0), (0, 0), (0, 1)]),  # one character, three tokens
        ("x\U0001d538y", [3, 3], [(0, 1), (1, 3)]),
    ],
)
def test_offsets_from_bytes_give_a_character_to_the_token_holding_its_last_byte(
    text: str, byte_lengths: list[int], expected: list[tuple[int, int]]
) -> None:
    assert sum(byte_lengths) == utf8_length(text)
    tiled = offsets_from_bytes(text, byte_lengths)
    assert tiled == expected
    _assert_tiles(tiled, len(text))


def test_gaps_go_to_the_following_token() -> None:
    text = "hello   world"
    # A tokenizer that strips spaces reports (0,5) and (8,13).
    tiled = tile_offsets([(0, 5), (8, 13)], len(text))
    assert tiled == [(0, 5), (5, 13)]
    assert "".join(text[s:e] for s, e in tiled) == text


def test_leading_gap_goes_to_the_first_token() -> None:
    assert tile_offsets([(2, 4), (4, 6)], 6) == [(0, 4), (4, 6)]


def test_last_token_is_extended_to_text_end() -> None:
    assert tile_offsets([(0, 3), (3, 5)], 9) == [(0, 3), (3, 9)]


def test_ends_past_the_text_are_clipped() -> None:
    tiled = tile_offsets([(0, 4), (4, 12), (12, 20)], 10)
    assert tiled == [(0, 4), (4, 10), (10, 10)]
    _assert_tiles(tiled, 10)


def test_a_span_nested_in_an_earlier_one_takes_its_shared_characters() -> None:
    # Token 1 reports chars 0-6 and token 2 chars 2-3: the shared char 2 goes to token 2,
    # and the tiles stay contiguous (chars 3-5 go on with the next token, like a gap).
    tiled = tile_offsets([(0, 6), (2, 3), (6, 8)], 8)
    assert tiled == [(0, 2), (2, 3), (3, 8)]
    _assert_tiles(tiled, 8)


def test_special_tokens_with_zero_offsets() -> None:
    tiled = tile_offsets([(0, 0), (0, 3), (0, 0), (3, 5)], 5)
    assert tiled == [(0, 0), (0, 3), (3, 3), (3, 5)]
    _assert_tiles(tiled, 5)


def test_empty_offsets() -> None:
    assert tile_offsets([], 0) == []
    assert tile_offsets([], 7) == []


def test_single_token_covers_everything() -> None:
    assert tile_offsets([(1, 2)], 5) == [(0, 5)]


@pytest.mark.parametrize(
    "offsets",
    [
        [(0, 1)],
        [(0, 2), (1, 3), (3, 3), (2, 9), (10, 11)],
        [(5, 6), (0, 1), (3, 4)],
        [(0, 0)] * 4,
        [(0, 100)] * 3,
        [(i, i + 2) for i in range(0, 20, 1)],
    ],
)
@pytest.mark.parametrize("text_length", [0, 1, 11, 40])
def test_always_contiguous_from_zero_to_length(
    offsets: list[tuple[int, int]], text_length: int
) -> None:
    tiled = tile_offsets(offsets, text_length)
    assert len(tiled) == len(offsets)
    _assert_tiles(tiled, text_length)
    assert sum(e - s for s, e in tiled) == text_length


def test_input_is_not_modified() -> None:
    offsets = [(0, 5), (3, 4)]
    tile_offsets(offsets, 9)
    assert offsets == [(0, 5), (3, 4)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("abc", 3),
        ("é", 2),
        ("€", 3),
        ("😀", 4),
        ("привет", 12),
        ("a\u0301", 3),  # combining accent: 2 code points, 3 bytes
    ],
)
def test_utf8_length(text: str, expected: int) -> None:
    assert utf8_length(text) == expected


def test_utf8_length_of_lone_surrogate_does_not_raise() -> None:
    assert utf8_length("\ud800") == 3
