"""Workload reading, bucketing, rate series and share checks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hardware.errors import InputError
from planner import workload as wl

AZURE = ("TIMESTAMP,ContextTokens,GeneratedTokens\n"
         "2023-11-16 18:17:03.9799600,4808,10\n"
         "2023-11-16 18:17:04.0319600,3180,8\n"
         "2023-11-16 18:17:05.0781490,110,27\n"
         "2023-11-16 18:17:13.0781490,300,300\n")
BURST = ("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
         "5,ChatGPT,472,18,490,Conversation log\n"
         "45,ChatGPT,1087,0,1087,Conversation log failed\n"
         "118,GPT-4,417,30,447,Conversation log\n")


def test_azure_csv(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text(AZURE)
    t = wl.read_trace(p)
    assert len(t) == 4
    assert t.arrival_s[0] == 0.0
    assert t.arrival_s[-1] == pytest.approx(9.0982, abs=1e-3)
    assert list(t.input_tokens) == [4808, 3180, 110, 300]
    assert list(t.output_tokens) == [10, 8, 27, 300]


def test_burstgpt_csv_skips_failed(tmp_path):
    p = tmp_path / "b.csv"
    p.write_text(BURST)
    t = wl.read_trace(p, fmt="burstgpt")
    assert len(t) == 2
    assert list(t.input_tokens) == [472, 417]
    assert t.duration_s == pytest.approx(113.0)


def test_jsonl(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps({"timestamp": i * 0.5, "input_tokens": 100 + i,
                                       "output_tokens": 10}) for i in range(5)) + "\n")
    t = wl.read_trace(p)
    assert len(t) == 5 and t.mean_rate_rps == pytest.approx(5 / 2.0)


@pytest.mark.parametrize("text,needle", [
    ("", "empty"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n", "no requests"),
    ("when,prompt\n1,2\n", "missing column"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9,abc,3\n", "not a number"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9,-5,3\n", "negative"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,5,3\n", "cannot read time"),
])
def test_bad_traces(tmp_path, text, needle):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(InputError) as err:
        wl.read_trace(p)
    assert needle in str(err.value)
    assert "bad.csv" in str(err.value)


def test_missing_trace(tmp_path):
    with pytest.raises(InputError, match="not found"):
        wl.read_trace(tmp_path / "nope.csv")


def test_histogram_and_representatives():
    t = wl.Trace(np.arange(6.0), np.array([10, 20, 300, 400, 5000, 600]),
                 np.array([5, 5, 50, 60, 10, 70]))
    grid = wl.BucketGrid((0, 256, 1024, 8192), (0, 32, 128))
    h = wl.histogram(t, grid, percentile=100)
    assert h.shares.sum() == pytest.approx(1.0)
    assert h.shares[0, 0] == pytest.approx(2 / 6)
    assert h.shares[1, 1] == pytest.approx(3 / 6)
    assert h.shares[2, 0] == pytest.approx(1 / 6)
    assert h.input_len[1, 1] == 600 and h.output_len[1, 1] == 70  # longest in the bucket
    assert h.input_len[0, 1] == 256 and h.output_len[0, 1] == 128  # empty: upper edges
    h50 = wl.histogram(t, grid, percentile=50)
    assert h50.input_len[1, 1] == 400


def test_rate_series_and_peak():
    arrivals = np.concatenate([np.linspace(0, 9.9, 10), np.linspace(10, 19.95, 40)])
    t = wl.Trace(arrivals, np.ones(50, int), np.ones(50, int))
    r = wl.rate_series(t, 10.0)
    assert r[0] == pytest.approx(1.0)
    assert r[1] == pytest.approx(40 / 9.95, rel=1e-3)  # last partial period over its own length
    assert wl.peak_rate(t, 10.0) == pytest.approx(r[1])
    masks = wl.period_masks(t, 10.0)
    assert [int(m.sum()) for m in masks] == [10, 40]


def test_shares_checks():
    with pytest.raises(InputError, match="sum to 0.9"):
        wl.check_shares([[0.5, 0.4]], field="shares")
    arr = wl.check_shares([[0.5, 0.4]], normalise=True)
    assert arr.sum() == pytest.approx(1.0)
    with pytest.raises(InputError, match="non-negative"):
        wl.check_shares([[1.2, -0.2]])


def test_rates_checks():
    with pytest.raises(InputError, match="negative"):
        wl.check_rates([1.0, -2.0])
    with pytest.raises(InputError, match="all rates are zero"):
        wl.check_rates([0.0])
    assert list(wl.check_rates(3)) == [3.0]


def test_histogram_from_shares_shape_mismatch():
    with pytest.raises(InputError, match="edges give"):
        wl.histogram_from_shares([[0.5, 0.5]], [0, 10, 20], [0, 5, 6])


def test_azure_shared_trace(shared_data):
    t = wl.read_trace(shared_data / "azure-llm-inference-2023" / "AzureLLMInferenceTrace_code.csv")
    assert len(t) == 8819
    assert t.mean_rate_rps == pytest.approx(2.57, abs=0.01)
    assert 9.0 < wl.peak_rate(t, 60.0) < 11.0  # per-minute peak (provenance: 9.75 on its own alignment)


@pytest.mark.parametrize("rows,needle", [
    (["2023-11-16 18:00:04.71,961,57"], "the trace has one request"),
    (["2023-11-16 18:00:04.7,500,50"] * 3, "all 3 requests arrive at one time"),
])
def test_a_trace_spanning_zero_seconds_gives_no_rate(tmp_path, rows, needle):
    p = tmp_path / "t.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    t = wl.read_trace(p)
    with pytest.raises(InputError) as exc:
        wl.rate_series(t, 900.0)
    e = exc.value
    assert needle in e.message and e.file == str(p) and e.field == "timestamps"
    assert "more than 0 s" in e.expected and "rate_rps" in e.hint  # the way out: give the rate
    # its sizes are still usable (a fleet request with rate_rps): the summary has no rates
    summary = wl.summarise(t, 60.0)
    assert summary["requests"] == len(rows) and summary["duration_s"] == 0.0
    assert summary["mean_rate_rps"] is None and summary["peak_rate_rps"] is None


def test_unsorted_edges_are_named_by_their_full_path_with_the_values():
    with pytest.raises(InputError) as exc:
        wl.histogram_from_shares([[0.25, 0.25], [0.25, 0.25], [0, 0]], [0, 1024, 256, 4096], [0, 64, 256],
                                 field="models[2].workload.histogram.shares")
    assert exc.value.field == "models[2].workload.histogram.input_edges"
    assert "[0, 1024, 256, 4096]" in exc.value.message
    with pytest.raises(InputError) as exc:
        wl.histogram_from_shares([[1.0]], [0, 10], [5, 5])
    assert exc.value.field == "output_edges"
