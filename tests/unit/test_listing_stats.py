"""Per-listing performance buckets: pure binning, merging and percentiles."""

from __future__ import annotations

from aichat_gateway.marketplace.stats import (
    BIN_UPPER_MS,
    bin_of,
    bucket_key,
    increments,
    minute_of,
    percentile_from_bins,
    summarise,
)


def test_a_latency_falls_in_the_first_bin_whose_upper_bound_holds_it() -> None:
    assert (bin_of(0), bin_of(25), bin_of(26), bin_of(10**9)) == (0, 0, 1, len(BIN_UPPER_MS))


def test_buckets_are_per_minute_and_hash_tagged_by_listing() -> None:
    assert minute_of(119.9) == 1
    assert bucket_key("p", "abc", 7) == "{p:l:abc}:stats:7"


def test_a_failed_request_without_first_token_counts_only_its_latency() -> None:
    assert increments(False, 30, -1) == ["n", "lat1"]


def test_a_successful_stream_counts_success_and_first_token() -> None:
    assert increments(True, 30, 10) == ["n", "lat1", "ok", "ttft0"]


def test_the_median_is_the_bin_holding_half_the_observations() -> None:
    counts = [0] * (len(BIN_UPPER_MS) + 1)
    counts[2], counts[5] = 3, 2  # three under 100 ms, two under 800 ms
    assert percentile_from_bins(counts, 0.5) == 100


def test_no_observations_have_no_percentile() -> None:
    assert percentile_from_bins([0, 0, 0], 0.5) is None


def test_minutes_merge_into_one_summary() -> None:
    minute_a = {"n": 3, "ok": 3, "lat2": 3, "ttft0": 3}
    minute_b = {"n": 1, "lat7": 1}
    stats = summarise([minute_a, {}, minute_b])
    assert (stats.requests, stats.success_rate, stats.p50_latency_ms, stats.p50_ttft_ms) == (4, 0.75, 100, 25)


def test_a_listing_without_traffic_shows_no_figures() -> None:
    stats = summarise([])
    assert (stats.requests, stats.success_rate, stats.p50_latency_ms) == (0, None, None)
