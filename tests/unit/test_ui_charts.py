"""The pages' inline SVG charts: escaped labels, one point per value, whole ticks for counts."""

from __future__ import annotations

import re

from musicrec_airflow.ui.charts import bar_chart, line_chart


def test_line_chart_points_labels_and_ticks():
    svg = str(line_chart(["v1", "<b>v2</b>"], {"ALS": [0.1, 0.2], "pop<": [None, 0.05]}, title="ndcg & co"))
    assert svg.count('class="point"') == 3  # None is a gap, not a point
    assert 'data-series="ALS" data-value="0.2"' in svg and 'data-series="pop&lt;" data-value="0.05"' in svg
    assert "<b>" not in svg and "&lt;b&gt;v2&lt;/b&gt;" in svg and 'aria-label="ndcg &amp; co"' in svg
    counts = str(line_chart(["a", "b"], {"findings": [0, 3]}, title="t", fmt="{:.0f}", integer=True))
    assert re.findall(r'text-anchor="end">(\d+)<', counts) == ["0", "1", "2", "3", "4"]
    assert "no data yet" in str(line_chart([], {"x": []}, title="empty"))


def test_bar_chart_escapes_and_scales():
    svg = str(bar_chart({"found": 10, "<i>x</i>": 5}, title="statuses"))
    assert "<i>" not in svg and "&lt;i&gt;x&lt;/i&gt;" in svg
    widths = [int(w) for w in re.findall(r'<rect x="120" y="\d+" width="(\d+)"', svg)]
    assert widths[0] == 2 * widths[1]
