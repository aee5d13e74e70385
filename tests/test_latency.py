"""grosslib.latency: table structure, prediction arithmetic, serialisation, input checks; no timed asserts."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

from grosslib.latency import (
    LatencyTable,
    latency_summary,
    latency_table,
    measure_latency,
    validate_latency,
)
from grosslib.models import export, set_config
from grosslib.series import GroSSConv2d

SHAPE = (2, 8, 8)
FAST = dict(warmup=0, repeats=1, progress=False)


def tiny_net() -> nn.Sequential:
    """conv 2 -> 4, two GroSS layers (4 -> 8 at sizes 1, 2, 4; nested 8 -> 8 at 2, 8), a linear head."""
    g = torch.Generator().manual_seed(0)
    convs = [nn.Conv2d(c_in, c_out, 3, padding=1) for c_in, c_out in ((2, 4), (4, 8), (8, 8))]
    with torch.no_grad():
        for conv in convs:
            conv.weight.normal_(0, 0.3, generator=g)
    return nn.Sequential(convs[0], nn.ReLU(),
                         GroSSConv2d.from_conv(convs[1], (1, 2, 4), init="svd", max_iter=0), nn.MaxPool2d(2),
                         nn.Sequential(GroSSConv2d.from_conv(convs[2], (2, 8), init="svd", max_iter=0)),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 3))


@pytest.fixture(scope="module")
def net() -> nn.Sequential:
    return tiny_net()


@pytest.fixture(scope="module")
def table(net: nn.Sequential) -> LatencyTable:
    return latency_table(net, SHAPE, repeats=2, warmup=1, progress=False)


def hand_table() -> LatencyTable:
    return LatencyTable(layers={"a": {1: 0.5, 2: 0.25}, "b.c": {2: 1.0, 8: 2.0}}, rest_ms=0.125,
                        input_shape=SHAPE, rest_samples={"1-2": 0.125})


# --------------------------------------------------------------------------------------------- arithmetic
def test_predict_is_rest_plus_the_layer_entries() -> None:
    t = hand_table()
    assert t.layer_names == ("a", "b.c")
    for s_a, s_b in ((1, 2), (1, 8), (2, 2), (2, 8)):
        assert t.predict((s_a, s_b)) == 0.125 + t.layers["a"][s_a] + t.layers["b.c"][s_b]
    assert t.predict([2, 8]) == 0.125 + 0.25 + 2.0


def test_dict_config_equals_tuple_config() -> None:
    t = hand_table()
    assert t.predict({"b.c": 8, "a": 1}) == t.predict((1, 8))


def test_round_trip_through_json() -> None:
    t = hand_table()
    back = LatencyTable.from_dict(json.loads(json.dumps(t.to_dict())))
    assert back == t
    assert back.predict((2, 8)) == t.predict((2, 8))


# --------------------------------------------------------------------------------------------- measured table
def test_table_has_every_layer_and_size(net: nn.Sequential, table: LatencyTable) -> None:
    assert table.layer_names == ("2", "4.0")
    assert {name: tuple(sizes) for name, sizes in table.layers.items()} == {"2": (1, 2, 4), "4.0": (2, 8)}
    for sizes in table.layers.values():
        assert all(math.isfinite(ms) and ms > 0 for ms in sizes.values())
    assert math.isfinite(table.rest_ms)
    assert set(table.rest_samples) == {"1-2", "2-8", "4-8"}    # smallest, middle, largest
    assert table.rest_ms == sorted(table.rest_samples.values())[1]
    assert table.device == "cpu" and table.batch_size == 1 and table.threads == torch.get_num_threads()
    assert table.input_shape == SHAPE
    assert math.isfinite(table.predict((2, 8)))


def test_table_from_a_decomposed_papernet_in_a_tqdm_bar(capsys: pytest.CaptureFixture[str]) -> None:
    from grosslib.models import build_papernet, decompose, search_space
    net = decompose(build_papernet(in_channels=1), {"conv2": (1, 32), "conv3": (4,), "conv4": (2, 64)},
                    init="svd", max_iter=0)
    t = latency_table(net, (1, 32, 32), warmup=0, repeats=1, batch_size=2, progress=True)
    assert t.layer_names == ("conv2", "conv3", "conv4") and t.batch_size == 2
    assert all(math.isfinite(t.predict(c)) for c in search_space(net))
    assert "latency table" in capsys.readouterr().err


def test_export_is_plain_and_equals_the_gross_network(net: nn.Sequential) -> None:
    exported = export(net, (2, 8))
    assert not any(isinstance(m, GroSSConv2d) for m in exported.modules())
    set_config(net, (2, 8))
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), net(x))
    assert any(isinstance(m, GroSSConv2d) for m in net.modules())     # the original is untouched


def test_measure_latency_restores_training_mode() -> None:
    module = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Dropout())
    assert module.training
    ms = measure_latency(module, SHAPE, batch_size=2, warmup=0, repeats=1)
    assert math.isfinite(ms) and ms > 0 and module.training


def test_validate_latency_gives_one_finite_row_per_config(net: nn.Sequential, table: LatencyTable) -> None:
    configs = [(1, 2), {"2": 4, "4.0": 8}, (2, 8)]
    frame = validate_latency(net, table, configs, warmup=0, repeats=1, progress=False)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["config"]) == ["1-2", "4-8", "2-8"]
    assert list(frame.columns) == ["config", "s_2", "s_4.0", "predicted_ms", "measured_ms", "rel_error"]
    assert frame[["predicted_ms", "measured_ms", "rel_error"]].map(math.isfinite).all().all()
    assert list(frame["predicted_ms"]) == [table.predict(c) for c in configs]
    summary = latency_summary(frame)
    assert summary["n"] == 3 and -1 <= summary["spearman"] <= 1
    assert 0 <= summary["mean_rel_error"] <= summary["max_rel_error"]


def test_summary_math() -> None:
    frame = pd.DataFrame({"predicted_ms": [1.0, 2.0, 3.0, 5.0], "measured_ms": [1.0, 4.0, 2.0, 4.0]})
    s = latency_summary(frame)
    # ranks: predicted 1 2 3 4, measured 1 3.5 2 3.5 -> Pearson of ranks
    expected = pd.Series([1.0, 2, 3, 4]).corr(pd.Series([1.0, 3.5, 2, 3.5]))
    assert s["spearman"] == pytest.approx(expected)
    assert s["mean_rel_error"] == pytest.approx((0 + 0.5 + 0.5 + 0.25) / 4)
    assert s["max_rel_error"] == pytest.approx(0.5)
    same_order = frame.iloc[:3].assign(predicted_ms=[1.0, 3.0, 2.0])
    assert latency_summary(same_order)["spearman"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("config, match", [
    ((1, 3), r"group size 3 is not in layer b\.c"),
    ((1,), "has 1 group sizes"),
    ((True, 2), "group size True"),
    ({"a": 1, "b.c": 2, "zz": 4}, r"unknown layers \['zz'\]"),
    ({"a": 1}, r"no group size for layers \['b\.c'\]"),
])
def test_predict_rejects_bad_configs(config, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        hand_table().predict(config)


@pytest.mark.parametrize("option, match", [({"batch_size": 0}, "batch_size"), ({"repeats": 0}, "repeats"),
                                            ({"warmup": -1}, "warmup")])
def test_counts_are_checked(net: nn.Sequential, option: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        latency_table(net, SHAPE, **{**FAST, **option})
    with pytest.raises(ValueError, match=match):
        measure_latency(nn.Identity(), SHAPE, **{"warmup": 0, "repeats": 1, **option})


def test_a_network_without_gross_layers_is_rejected() -> None:
    with pytest.raises(ValueError, match="no GroSS layer"):
        latency_table(nn.Sequential(nn.Conv2d(2, 2, 3)), SHAPE, **FAST)


def test_bad_reference_configs_and_shapes_are_rejected(net: nn.Sequential) -> None:
    with pytest.raises(ValueError, match=r"reference config \(3, 8\): group size 3 is not in layer 2.s"):
        latency_table(net, SHAPE, reference_configs=[(3, 8)], **FAST)
    with pytest.raises(ValueError, match="empty"):
        latency_table(net, SHAPE, reference_configs=[], **FAST)
    with pytest.raises(ValueError, match="input_shape"):
        latency_table(net, (2, 0, 8), **FAST)


def test_validate_rejects_a_foreign_table_before_timing(net: nn.Sequential, table: LatencyTable) -> None:
    with pytest.raises(ValueError, match="not the table's"):
        validate_latency(net, hand_table(), [(1, 2)], **FAST)
    with pytest.raises(ValueError, match="group size 8 is not in layer 2"):
        validate_latency(net, table, [(1, 2), (8, 8)], **FAST)
