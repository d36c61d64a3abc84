"""`aichat-gateway demo --funds`: an amount of USD, refused by argparse before anything runs."""

from __future__ import annotations

import pytest

from aichat_gateway.server.cli import build_parser


def test_funds_default_to_ten_dollars_in_micro_usd() -> None:
    assert build_parser().parse_args(["demo"]).funds == 10_000_000


def test_funds_take_a_decimal_amount_of_usd() -> None:
    assert build_parser().parse_args(["demo", "--funds", "1000.50"]).funds == 1_000_500_000


@pytest.mark.parametrize(
    ("value", "reason"),
    [("abc", "not a decimal number"), ("0", "more than 0"), ("-5", "more than 0"), ("1e3", "not a decimal")],
)
def test_a_bad_amount_stops_the_command_with_the_reason(
    value: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["demo", "--funds", value])
    error = capsys.readouterr().err
    assert stopped.value.code == 2
    assert "--funds" in error and reason in error
