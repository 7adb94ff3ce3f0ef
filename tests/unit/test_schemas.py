"""The response models' own behaviour: fields present once asked for, copies independent."""

from __future__ import annotations

from service.schemas import TextResult


def result() -> TextResult:
    return TextResult(
        num_tokens=1,
        num_scored_tokens=0,
        sum_logprob=0.0,
        mean_nll=None,
        ppl=None,
        bits_per_byte=None,
        bits_per_char=None,
    )


def test_an_asked_for_field_is_null_and_others_are_left_out() -> None:
    plain = result()
    assert "percentile" not in plain.model_dump() and "mean_entropy" not in plain.model_dump()
    plain.mark_asked("percentile")
    dumped = plain.model_dump()
    assert dumped["percentile"] is None and "mean_entropy" not in dumped


def test_marking_a_copy_leaves_the_original_alone() -> None:
    original = result()
    copy = original.model_copy()
    copy.mark_asked("mean_entropy")
    assert "mean_entropy" in copy.model_dump()
    assert "mean_entropy" not in original.model_dump()
