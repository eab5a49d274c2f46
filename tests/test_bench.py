"""`facepay bench`: the JSON it promises, from real timings (the figures themselves live in benchmarks/)."""

import json

from conftest import FACES


def test_bench_json_shape(cli):
    r = cli("bench", "--frames", FACES, "--json", "--repeat", "1", "--sizes", "100,1000")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["frames"] == 7 and out["embedded"] == 5
    assert out["rejected_by_gates"] == {"partly_outside": 2}
    assert set(out["stages_ms"]) == {"detect", "gates", "landmarks", "embed", "match"}
    for v in [out["per_decision_ms"], *out["stages_ms"].values()]:
        assert v["median"] > 0 and v["p95"] >= v["median"]
    assert out["per_decision_ms"]["median"] >= out["stages_ms"]["embed"]["median"]
    assert set(out["match_ms"]) == {"100", "1000"} and all(v > 0 for v in out["match_ms"].values())
    assert isinstance(out["dlib"]["blas"], bool)
    # the liveness stage, on a head turn rendered from the first frontal photo
    lv = out["liveness"]
    assert lv["live"] == 1 and lv["passes"] == 1
    assert set(lv["stages_ms"]) == {"detect", "gates", "landmarks", "liveness"}
    assert lv["scan_frame_ms"]["median"] >= lv["stages_ms"]["landmarks"]["median"] > 0
    assert lv["deciding_frame_adds_ms"]["median"] > 0


def test_bench_bad_input(cli, tmp_path):
    assert cli("bench", "--frames", tmp_path).returncode == 2
    assert cli("bench", "--frames", FACES, "--sizes", "ten").returncode == 2


def test_matcher_margin_and_threshold():
    import numpy as np

    from terminal.face.matcher import Gallery, false_match_in_gallery

    g = Gallery(["a", "b"], np.array([[0.0] * 128, [1.0] + [0.0] * 127], np.float32))
    probe = np.zeros(128, np.float32)
    probe[0] = 0.1
    m = g.match(probe, threshold=0.55, margin=0.06)
    assert m.shopper_id == "a" and abs(m.distance - 0.1) < 1e-6 and abs(m.margin - 0.8) < 1e-6
    probe[0] = 0.5
    m = g.match(probe, threshold=0.55, margin=0.06)
    assert m.shopper_id is None and "too close" in m.reason
    probe[0] = 3
    assert g.match(probe, 0.55, 0.06).reason == "no enrolled face is close enough"
    assert Gallery([], np.zeros((0, 128))).match(probe, 0.55, 0.06).reason.startswith("nobody")
    assert abs(false_match_in_gallery(0.003, 100) - 0.2595) < 1e-3
    assert false_match_in_gallery(0.003, 0) == 0.0
