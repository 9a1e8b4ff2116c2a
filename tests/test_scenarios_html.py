"""`dispatchsim run --html FILE`: one self-contained page, checked in a real headless Chromium."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dispatchsim.cli import main
from dispatchsim.scenarios import html_report as html_report_module
from dispatchsim.scenarios.html_report import html_report, write_html
from dispatchsim.scenarios.plots import DENSE, fmt_tick, time_ticks
from dispatchsim.scenarios.runner import run_scenario
from dispatchsim.scenarios.spec import parse_scenario

FAILING = """\
name: small-fail
seed: 3
providers:
  crm:
    behaviour: {sequence: [{times: 2, status: 500}, {status: 200}]}
tenants: [acme]
configurations:
  - {id: c1, tenant: acme, provider: crm}
timeline:
  - at: 0s
    create: {count: 2}
expect:
  all_delivered: true
  retry_delays: [1m, 3m]
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """Three scenarios in one page: ordered (one configuration), fan-out (two), and a failing one."""
    d = tmp_path_factory.mktemp("html")
    failing = d / "fail.yaml"
    failing.write_text(FAILING, encoding="utf-8")
    out = d / "report.html"
    assert main(["run", "ordered_head_outage", "fan_out_one_down", str(failing), "-q", "--html", str(out)]) == 1
    return out


def test_page_renders_offline_without_console_errors(browser, report):
    def check(page):
        assert page.title() == "dispatchsim: 3 scenarios"
        assert page.locator("section.scenario").count() == 3
        assert page.locator("header").inner_text().startswith("dispatchsim run — 2/3 scenarios passed")
        assert page.locator("svg.plot").count() > 10
        assert page.locator("svg.plot").first.bounding_box()["width"] > 300  # really laid out

    browser.visit(report, check)
    text = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["'](https?:)?//""", text), "nothing may be loaded from the network"
    assert "<link" not in text and "@import" not in text


def test_expectations_show_pass_and_fail(browser, report):
    def check(page):
        first, _, failing = page.locator("section.scenario").all()
        assert first.locator("h2").inner_text().startswith("PASS ordered-head-outage")
        assert failing.locator("h2").inner_text().startswith("FAIL small-fail")
        bad = failing.locator("table.expectations tr", has_text="retry_delays")
        assert bad.locator("td.fail").inner_text() == "FAIL"
        assert "1m00s, 3m00s" in bad.inner_text()
        assert first.locator("table.expectations td.fail").count() == 0

    browser.visit(report, check)


def _series(svg) -> list[str]:
    return [g.get_attribute("data-name") for g in svg.locator(".series").all()]


def test_plots_have_the_expected_series(browser, report):
    def check(page):
        ordered, fan_out, _ = page.locator("section.scenario").all()
        timeline = ordered.locator("svg.timeline")
        assert timeline.get_attribute("data-series") == "2"
        assert _series(timeline) == ["SUCCESS", "HTTP_ERROR"]
        assert timeline.locator(".series[data-name=SUCCESS] circle").count() == 20  # every success visible
        assert timeline.locator(".series[data-name=HTTP_ERROR] circle").count() == 10
        # backlog and in flight: one chart per configuration, two lines each
        for section, configs in ((ordered, 1), (fan_out, 2)):
            charts = section.locator("svg.steps").all()
            assert len(charts) == configs
            for chart in charts:
                assert chart.get_attribute("data-series") == "2"
                assert _series(chart) == ["backlog", "in flight"]
                assert all(p.get_attribute("d").startswith("M") for p in chart.locator("path.series").all())
        latency = fan_out.locator("svg.bars").first
        assert _series(latency) == ["p50", "p90", "p99"]
        assert fan_out.locator("table.latency tr").count() == 1 + 2  # header + one row per provider
        schedule = ordered.locator("svg.bars").nth(1)
        assert "crm-sales: wait after each failed attempt" in schedule.text_content()
        assert _series(schedule) == ["configured", "used (median)", "used (max)"]
        assert schedule.locator(".series[data-name='used (median)'] rect").count() == 10

    browser.visit(report, check)


def test_round_ticks_on_the_time_axis(browser, report):
    def check(page):
        timeline = page.locator("section.scenario").first.locator("svg.timeline")
        labels = [t.text_content() for t in timeline.locator("text").all()]
        assert [x for x in labels if re.fullmatch(r"0|\d+h", x)] == ["0", "1h", "2h", "3h", "4h", "5h"]

    browser.visit(report, check)


def test_schedule_table_compares_configured_and_used(browser, report):
    def check(page):
        rows = page.locator("section.scenario").first.locator("table.schedule tr").all()
        cells = [r.locator("td").all_inner_texts() for r in rows[1:]]
        assert [c[1] for c in cells] == ["1m", "2m", "4m", "8m", "16m", "32m", "1h", "1h", "1h", "1h"]
        assert [c[1] for c in cells] == [c[2] for c in cells]  # used exactly as configured

    browser.visit(report, check)


def test_event_log_is_searchable(browser, report):
    def check(page):
        box = page.locator("section.scenario").first.locator("div.eventlog")
        total = int(box.locator(".count").inner_text().split(" of ")[1].split()[0])
        box.locator("input").fill("delivery.retrying crm-sales")
        assert box.locator(".count").inner_text() == f"10 of {total} events match"
        lines = box.locator("pre").inner_text().splitlines()
        assert len(lines) == 10 and all('"delivery.retrying"' in line for line in lines)
        box.locator("input").fill("no-such-thing-at-all")
        assert box.locator(".count").inner_text() == f"0 of {total} events match"

    browser.visit(report, check)


DENSE_SCENARIO = """\
name: dense
seed: 5
providers:
  crm:
    behaviour:
      windows: [{from: 0s, to: 2m30s, status: 503}]
      else: {status: 200}
tenants: [acme]
configurations:
  - {id: c1, tenant: acme, provider: crm, ordering: {mode: none, concurrency: 50}}
timeline:
  - at: 0s
    create: {count: 250}
expect:
  all_delivered: true
"""


def test_dense_timeline_aggregates_instead_of_one_element_per_attempt(browser, tmp_path):
    result = run_scenario(parse_scenario(DENSE_SCENARIO))  # 250 deliveries tried at 0, 1m and 3m
    assert len(result.attempts) > DENSE
    out = tmp_path / "flaky.html"
    out.write_text(html_report([result]), encoding="utf-8")

    def check(page):
        timeline = page.locator("svg.timeline")
        marks = timeline.locator(".series > *").count()
        assert 0 < marks < len(result.attempts) / 4
        assert timeline.locator(".series[data-name=SUCCESS] rect").count() > 0  # successes still drawn
        assert "attempts in 180 time bins" in timeline.text_content()

    browser.visit(out, check)


def test_tick_steps_are_round():
    assert [fmt_tick(t) for t in time_ticks(6 * 3600 + 180)] == ["0", "2h", "4h", "6h"]
    assert [fmt_tick(t) for t in time_ticks(17 * 60)] == ["0", "5m", "10m", "15m"]
    assert [fmt_tick(t) for t in time_ticks(45)] == ["0", "10s", "20s", "30s", "40s"]
    assert fmt_tick(86400 + 43200) == "1d12h"


def test_the_browser_check_catches_console_errors_and_outside_requests(browser, tmp_path):
    """The helper itself: a page that logs an error or reaches for the network fails the visit."""
    noisy = tmp_path / "noisy.html"
    noisy.write_text('<!DOCTYPE html><html><body><script>console.error("broken")</script></body></html>')
    with pytest.raises(AssertionError, match="console errors: .*broken"):
        browser.visit(noisy, lambda page: None)
    fetching = tmp_path / "fetching.html"
    fetching.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png" alt=""></body></html>')
    with pytest.raises(AssertionError, match="Failed to load resource|requests outside the page"):
        browser.visit(fetching, lambda page: None)


def test_a_long_event_log_embeds_its_first_and_last_lines_written_a_piece_at_a_time(tmp_path, monkeypatch):
    """The page is written as it is made (``write_html``): the same text as the string, and a log
    longer than MAX_EVENTS embeds its head and tail as one JSON array, ``</`` escaped."""
    monkeypatch.setattr(html_report_module, "MAX_EVENTS", 6)
    result = run_scenario(parse_scenario(FAILING))
    lines = list(result.events)
    assert len(lines) > 6
    out = tmp_path / "page.html"
    write_html([result], out)
    page = out.read_text(encoding="utf-8")
    assert page == html_report([result])
    embedded = re.search(r'<script type="application/json" id="events0">(.*?)</script>', page, re.S).group(1)
    assert embedded == json.dumps(lines[:3] + lines[-3:], ensure_ascii=False).replace("</", "<\\/")
    assert f"{len(lines):,} events: the first and last 3 are embedded" in page
