"""The pictures a job draws, checked on the matplotlib figures themselves: lines, labels, legends, axes."""

from __future__ import annotations

import pytest

from compress.report import curves_figure

HISTORY = [
    {"step": 10, "train_loss": 4.0, "valid_perplexity": 30.0},
    {"step": 20, "train_loss": 3.5, "valid_perplexity": 25.0},
]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def legend_texts(axis) -> list[str]:
    return [text.get_text() for text in axis.get_legend().get_texts()]


def test_curves_draw_the_users_weights_as_a_dashed_reference_line():
    figure = curves_figure(
        HISTORY, "valid_perplexity", compared={"reference: your weights": {"valid_perplexity": 22.0}}
    )
    metric = figure.axes[1]
    flat = [line for line in metric.get_lines() if list(line.get_ydata()) == [22.0, 22.0]]
    assert len(flat) == 1 and flat[0].get_linestyle() == "--"
    assert legend_texts(metric) == ["this job", "reference: your weights: 22"]
    assert legend_texts(figure.axes[0]) == ["this job"]  # no training loss for weights evaluated once


def test_curves_draw_a_trained_reference_dashed_at_every_evaluation():
    reference = {
        "valid_perplexity": 24.0,
        "history": [dict(h, valid_perplexity=h["valid_perplexity"] - 1) for h in HISTORY],
    }
    figure = curves_figure(HISTORY, "valid_perplexity", compared={"reference: dense, same parameters": reference})
    for axis in figure.axes[:2]:
        assert legend_texts(axis) == ["this job", "reference: dense, same parameters"]
        assert axis.get_lines()[1].get_linestyle() == "--"
