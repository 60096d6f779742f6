"""The rollout timeline plot: one bar per phase, the outcome marked, a PNG that opens."""

import io

import pytest
from matplotlib.image import imread

from modelloop.deploy.rollout_plot import timeline_figure

TIMELINE = [(100.0, "registry read"), (100.5, "rollout v1 -> v2 on local"), (103.0, "ready")]


def test_one_bar_per_phase_and_outcome_colour() -> None:
    fig = timeline_figure(TIMELINE, title="it: m v1 -> v2 (serving)", succeeded=True)
    [ax] = fig.axes
    bars = [(p.get_x(), p.get_width()) for p in ax.patches]
    assert bars == [(0.0, 0.5), (0.5, 2.5)]
    [mark] = ax.lines
    assert list(mark.get_xdata()) == [3.0] and mark.get_color() == "tab:green"
    assert ax.get_title() == "it: m v1 -> v2 (serving)"
    failed = timeline_figure([*TIMELINE[:2], (104.0, "failed: no")], title="t", succeeded=False)
    assert failed.axes[0].lines[0].get_color() == "tab:red"


def test_renders_a_png() -> None:
    buf = io.BytesIO()
    timeline_figure(TIMELINE, title="t", succeeded=True).savefig(buf, format="png")
    image = imread(io.BytesIO(buf.getvalue()), format="png")
    assert image.shape[0] > 50 and image.shape[1] > 300


def test_empty_timeline_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        timeline_figure([], title="t", succeeded=True)
