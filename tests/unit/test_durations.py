"""Tests for Ollama-style ``keep_alive`` durations (``modelgarden.durations``)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgarden.durations import (
    FOREVER,
    TooFar,
    format_duration,
    parse_go_duration,
    parse_keep_alive,
    parse_moment,
    parse_offset,
)
from modelgarden.errors import BadRequest
from modelgarden.security.keys import expiry


def test_forever_is_infinity() -> None:
    assert math.inf == FOREVER


# --- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (300, 300.0),
        (1.9, 1.0),
        (0.5, 0.0),
        (299.999, 299.0),
        (86400, 86400.0),
    ],
)
def test_number_is_seconds_with_fraction_truncated(value: float, expected: float) -> None:
    result = parse_keep_alive(value)
    assert result == expected
    assert isinstance(result, float)


@pytest.mark.parametrize("value", [-1, -0.5, -300, -1e9, float("-inf")])
def test_negative_number_means_forever(value: float) -> None:
    assert parse_keep_alive(value) == FOREVER


# --- Go duration strings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1h", 3600.0),
        ("30s", 30.0),
        ("1.5h", 5400.0),
        ("2m30s", 150.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("+5m", 300.0),
        (" 5m ", 300.0),
        (".5s", 0.5),
    ],
)
def test_go_duration_strings(text: str, expected: float) -> None:
    assert parse_keep_alive(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("300ms", 0.3),
        ("1500us", 0.0015),
        ("1500µs", 0.0015),
        ("2000000ns", 0.002),
    ],
)
def test_sub_second_units(text: str, expected: float) -> None:
    assert parse_keep_alive(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["-1m", "-1s", "-1h30m", "-300ms"])
def test_negative_duration_string_means_forever(text: str) -> None:
    assert parse_keep_alive(text) == FOREVER


@pytest.mark.parametrize(("text", "expected"), [("300", 300.0), ("0", 0.0), ("12.7", 12.0)])
def test_numeric_string_is_seconds(text: str, expected: float) -> None:
    assert parse_keep_alive(text) == expected


@pytest.mark.parametrize("text", ["-1", "-300", "-0.5"])
def test_negative_numeric_string_means_forever(text: str) -> None:
    assert parse_keep_alive(text) == FOREVER


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["5 minutes", "", "   ", "abc", "5d", "m", "5m3", "1x", "--5m", "5m-"],
)
def test_garbage_strings_raise_with_helpful_message(value: str) -> None:
    with pytest.raises(ValueError, match="invalid keep_alive") as info:
        parse_keep_alive(value)
    message = str(info.value)
    assert repr(value) in message
    # The message tells the client what would have been accepted.
    assert "5m" in message
    assert "seconds" in message


@pytest.mark.parametrize("value", [True, False, None, [], {}, ["5m"], object()])
def test_non_number_non_string_raises(value: object) -> None:
    with pytest.raises(ValueError, match="keep_alive must be a number of seconds or a duration"):
        parse_keep_alive(value)


@pytest.mark.parametrize("value", [float("nan"), "nan", "NaN"])
def test_nan_raises(value: object) -> None:
    with pytest.raises(ValueError, match="NaN"):
        parse_keep_alive(value)


@pytest.mark.parametrize("value", [float("inf"), "inf", "Infinity"])
def test_positive_infinity_is_a_value_error_not_a_crash(value: object) -> None:
    # The function promises ValueError "with a message fit for the client" for bad values;
    # an unhandled OverflowError would turn a client typo into a server error.
    with pytest.raises(ValueError, match="keep_alive"):
        parse_keep_alive(value)


# --- parse_go_duration directly --------------------------------------------------------------


def test_parse_go_duration_keeps_sign() -> None:
    assert parse_go_duration("-1m") == -60.0
    assert parse_go_duration("1h1m1s") == 3661.0
    assert parse_go_duration("-0") == 0.0


@pytest.mark.parametrize("text", ["", "  ", "5", "h", "1.5", "5 m", "5M"])
def test_parse_go_duration_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_go_duration(text)


# --- format_duration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (59, "59s"),
        (60, "1m0s"),
        (300, "5m0s"),
        (3599, "59m59s"),
        (3600, "1h0m0s"),
        (5400, "1h30m0s"),
        (90061, "25h1m1s"),
        (1.9, "1s"),
        (FOREVER, "forever"),
    ],
)
def test_format_duration(seconds: float, expected: str) -> None:
    assert format_duration(seconds) == expected


@pytest.mark.parametrize("text", ["5m", "1h30m", "45s", "2h0m5s"])
def test_format_then_parse_round_trip(text: str) -> None:
    seconds = parse_keep_alive(text)
    assert parse_keep_alive(format_duration(seconds)) == seconds


# --- properties -------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=9 * 10**9))  # up to Go's longest duration
def test_int_seconds_and_s_suffix_agree(n: int) -> None:
    assert parse_keep_alive(n) == parse_keep_alive(f"{n}s") == n


@given(st.integers(min_value=0, max_value=10**9))
def test_int_and_numeric_string_agree(n: int) -> None:
    assert parse_keep_alive(n) == parse_keep_alive(str(n)) == n


@given(st.integers(min_value=0, max_value=10**7))
def test_format_duration_round_trips_whole_seconds(n: int) -> None:
    assert parse_keep_alive(format_duration(n)) == n


@given(st.integers(min_value=0, max_value=1000), st.integers(0, 59), st.integers(0, 59))
def test_hms_duration_string(h: int, m: int, s: int) -> None:
    assert parse_keep_alive(f"{h}h{m}m{s}s") == h * 3600 + m * 60 + s


@given(st.floats(max_value=-1e-9, allow_nan=False))
def test_any_negative_float_is_forever(x: float) -> None:
    assert parse_keep_alive(x) == FOREVER


@pytest.mark.parametrize(
    "text", ["9" * 400 + "d", "99999999h", "36526d", "-900000h", "9999999999999999999s"]
)
def test_an_offset_beyond_a_hundred_years_is_refused(text: str) -> None:
    with pytest.raises(TooFar, match="more than 100 years"):
        parse_offset(text)


def test_offsets_and_moments_read_as_they_are_written() -> None:
    assert parse_offset("30d") == 30 * 86400
    assert parse_offset("1h30m") == 5400
    assert parse_moment("2030-01-01") == 1893456000.0
    assert parse_moment("2030-01-01T01:00:00+01:00") == 1893456000.0
    with pytest.raises(ValueError, match="invalid duration"):
        parse_offset("2030-01-01")


@pytest.mark.parametrize(
    ("text", "said"),
    [("9" * 400 + "d", "more than 100 years away"), ("9999-12-31", "more than 100 years away"),
     ("-1h", "has passed"), ("2020-01-01", "has passed"), ("5x", "expected 30d")],
)  # fmt: skip
def test_a_key_expiry_out_of_range_is_a_clear_400(text: str, said: str) -> None:
    with pytest.raises(BadRequest, match=said):
        expiry(text)
