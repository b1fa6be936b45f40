"""The pictures a job draws, checked on the matplotlib figures themselves: lines, labels, legends, axes."""

from __future__ import annotations

import pytest
import torch

from compress.outputs import speed_figure
from compress.report import curves_figure, moduli_figure, recurrent_weights_figure, tradeoff_figure

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


def predefined_report(**extra):
    return {
        "checkpoint_bytes": 112_000,
        "dense_checkpoint_bytes": 400_000,
        "metrics": {"valid_perplexity": 21.8},
        "verdict": {"value": 21.8, "reference": 21.6},
        "speed": {"speedup_latency": 0.98, "speedup_throughput": 0.99},
    } | extra


SAME_PARAMS = {"dense_same_params": {"parameters": 26_000, "valid_perplexity": 21.6}}


def tick_labels(figure, axis) -> list[str]:
    figure.canvas.draw()
    return [t.get_text() for t in axis.get_xticklabels() if t.get_text()]


def test_tradeoff_names_the_quality_and_the_speed_references_and_mixes_no_models():
    figure = tradeoff_figure(predefined_report(), "valid_perplexity", SAME_PARAMS, "dense_same_params")
    size, speed = figure.axes
    assert legend_texts(size) == ["this job: 21.8", "reference: dense, same parameters: 21.6"]
    assert "dense equivalent (speed 1.0)" in legend_texts(speed)
    assert "dense" not in legend_texts(speed)
    # every point on the speed panel is this job (x its speed-up, y its metric); the references are lines
    points = [tuple(xy) for collection in speed.collections for xy in collection.get_offsets()]
    assert sorted(points) == [(0.98, 21.8), (0.99, 21.8)]
    vertical = [line for line in speed.get_lines() if line.get_label() == "dense equivalent (speed 1.0)"]
    assert list(vertical[0].get_xdata()) == [1.0, 1.0]


def test_a_run_has_one_colour_in_every_picture():
    from matplotlib.colors import to_hex

    runs = SAME_PARAMS | {"dense_full": {"parameters": 90_000, "valid_perplexity": 20.0}}
    compared = {
        "reference: dense, same parameters": {"valid_perplexity": 21.6, "history": HISTORY},
        "baseline: dense, full size": {"valid_perplexity": 20.0, "history": HISTORY},
    }
    curves = curves_figure(HISTORY, "valid_perplexity", compared=compared)
    tradeoff = tradeoff_figure(predefined_report(), "valid_perplexity", runs, "dense_same_params")
    colours: dict[str, set[str]] = {}
    for axis in curves.axes[:2]:
        for line in axis.get_lines():
            colours.setdefault(line.get_label(), set()).add(to_hex(line.get_color()))
    size, speed = tradeoff.axes
    for collection in size.collections + speed.collections:
        label = collection.get_label().rsplit(": ", 1)[0].removesuffix(", batch 1").removesuffix(", batch 32")
        colours.setdefault(label, set()).add(to_hex(collection.get_facecolor()[0]))
    runs_drawn = ["this job", "reference: dense, same parameters", "baseline: dense, full size"]
    assert all(len(colours[label]) == 1 for label in runs_drawn), colours
    assert len({next(iter(colours[label])) for label in runs_drawn}) == 3  # and no two runs alike


def test_tradeoff_axes_read_as_plain_numbers_and_speed_includes_one_with_a_margin():
    figure = tradeoff_figure(predefined_report(), "valid_perplexity", SAME_PARAMS, "dense_same_params")
    size, speed = figure.axes
    for axis in (size, speed):
        labels = tick_labels(figure, axis)
        assert len(labels) >= 4 and not any("10^" in t or "$" in t for t in labels), labels
    assert "kB" in size.get_xlabel() and size.get_xlim()[0] == 0
    assert speed.get_xlim()[0] == 0 and speed.get_xlim()[1] >= 1.2
    low, high = size.get_ylim()
    assert high - low >= 0.1 * 21.8  # a 1% difference in the metric is not stretched over the whole axis


def test_tradeoff_of_a_dense_job_is_not_drawn_unless_it_has_baselines():
    report = predefined_report(verdict={"value": 21.1, "reference": None})
    assert tradeoff_figure(report, "valid_perplexity", {}, None, compare_speed=False) is None
    baseline = {"dense_full": {"parameters": 100_000, "valid_perplexity": 20.0}}
    figure = tradeoff_figure(report, "valid_perplexity", baseline, None, compare_speed=False)
    assert len(figure.axes) == 1
    assert legend_texts(figure.axes[0]) == ["this job: 21.1", "baseline: dense, full size: 20"]


def test_recurrent_weights_are_titled_labelled_with_a_colour_bar_and_undistorted():
    weight = torch.rand(192, 48)
    weight[:, :10] = 0
    figure = recurrent_weights_figure({"rnn.weight_hh_l0": weight})
    image, bar = figure.axes
    assert figure._suptitle.get_text() == "Recurrent weights |W_hh| of each layer"
    assert "rnn.weight_hh_l0" in image.get_title() and "79.2% of weights non-zero" in image.get_title()
    assert image.get_xlabel() and image.get_ylabel().startswith("gate row")
    assert [t.get_text() for t in image.get_yticklabels()] == ["input", "forget", "cell", "output"]
    assert bar.get_ylabel().startswith("|weight|")
    assert image.get_aspect() == 1.0  # a square pixel per weight
    width, height = figure.get_size_inches()
    assert width < height  # a tall matrix makes a tall picture


def test_a_square_matrix_names_its_rows_hidden_units():
    figure = recurrent_weights_figure({"rnn.weight_hh_l0": torch.rand(32, 32)})
    assert figure.axes[0].get_ylabel() == "hidden unit (output)"


class FakeRegularizer:
    """What moduli_figure reads from a ModuliRegularizer: one layer of 10 neurons on a torus."""

    widths = (10,)
    space = type("Space", (), {"kind": "torus"})()

    def points(self, group):
        return torch.rand(10, 2)

    def surviving_connections(self, group):
        return torch.arange(10.0)


def test_moduli_neurons_colour_bar_is_labelled():
    figure = moduli_figure(FakeRegularizer())
    scatter, bar = figure.axes
    assert bar.get_ylabel() == "surviving recurrent connections (in + out)"
    assert scatter.get_xlabel() == "x" and scatter.get_ylabel() == "y" and "10 neurons" in scatter.get_title()


def test_speed_is_titled_with_what_it_shows_in_microseconds():
    times = {"dense": 15.1, "runtime": 15.5, "dense_fused": 20.0, "dense_steps": 15.1}
    speed = {"device": "cpu", "threads": 2, "speedup_latency": 0.97, "speedup_throughput": 0.99}
    figure = speed_figure(speed | {"latency_us_per_token": times, "throughput_us_per_token": times})
    assert figure._suptitle.get_text() == "Inference speed: this model vs its dense equivalent (cpu, 2 threads)"
    for axis in figure.axes:
        assert axis.get_ylabel().startswith("µs per token")
        assert [t.get_text() for t in axis.get_xticklabels()] == ["dense equivalent", "this model\n(runtime)"]
    assert figure.axes[0].get_title() == "batch 1 (latency): speed-up 0.97×"
    assert any("noisy" in text.get_text() for text in figure.texts)


def test_size_ratio_compares_tensors_with_tensors(tmp_path):
    """A tiny model's header (manifest, vocabulary) outweighs its tensors: the ratio leaves it out on both sides."""
    from safetensors.torch import save_file

    from compress.checkpoint import data_bytes
    from compress.report import build_report

    tensors = {"a": torch.zeros(10, 7), "b": torch.ones(3, dtype=torch.float16)}
    path = tmp_path / "x.safetensors"
    save_file(tensors, path, metadata={"manifest": "v" * 5000})
    assert data_bytes(path) == 10 * 7 * 4 + 3 * 2 < path.stat().st_size - 5000

    model = torch.nn.Linear(20, 10)  # 210 parameters: 840 dense bytes
    report = build_report(model, checkpoint_bytes=6000, tensor_bytes=420, dense_bytes=840)
    assert report["size_ratio"] == 0.5 and report["checkpoint_bytes"] == 6000
    figure = tradeoff_figure(
        report | {"metrics": {"ppl": 10.0}, "verdict": {"value": 10.0, "reference": 9.0}},
        "ppl",
        {"dense_same_params": {"parameters": 210, "ppl": 9.0}},
        "dense_same_params",
        compare_speed=False,
    )
    points = sorted(tuple(xy) for collection in figure.axes[0].collections for xy in collection.get_offsets())
    assert points == [(420.0, 10.0), (840.0, 9.0)]  # this job at its tensors' bytes, the reference at 4 B a parameter
