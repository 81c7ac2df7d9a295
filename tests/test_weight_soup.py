"""scripts/weight_soup.py: the average of runs of one network, written as a run folder the tools read."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from script_modules import load_script

from cmr_landmark.network import UNet
from cmr_landmark.training import STAGES, load_cascade, save_checkpoint


def soup_script():
    return load_script("weight_soup")


def make_run(folder: Path, seed: int, widths: tuple[int, ...] = (4, 8), wall_s: float = 60.0, kind: str = "any"
             ) -> dict:
    """A finished run folder of a small SAX cascade with its own random weights; its stages' state_dicts."""
    folder.mkdir()
    torch.manual_seed(seed)
    states = {}
    for stage in STAGES:
        unet = UNet(3, widths)
        with torch.no_grad():  # BatchNorm statistics that differ between runs, as trained ones do
            for module in unet.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.normal_()
                    module.running_var.uniform_(0.5, 2.0)
                    module.num_batches_tracked.fill_(100 * seed)
        states[stage] = unet.state_dict()
        save_checkpoint(folder / f"{stage}_best.pt", model=states[stage], epoch=3, val_mean_mm=4.0,
                        metrics={"val_mean_mm": 4.0}, widths=list(widths), view="sax", stage=stage)
    (folder / "run.json").write_text(json.dumps({"kind": kind, "lr": 0.00025, "wall_s": wall_s,
                                                 "metrics": {"fine": {"epoch": 3, "val_mean_mm": 4.0}}}))
    return states


def test_the_soup_is_the_mean_of_the_runs_and_loads_as_a_cascade(tmp_path) -> None:
    a = make_run(tmp_path / "a", seed=1, wall_s=60.0)
    b = make_run(tmp_path / "b", seed=2, wall_s=90.0)
    out = tmp_path / "soup"
    assert soup_script().main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    for stage in STAGES:
        checkpoint = torch.load(out / f"{stage}_best.pt", weights_only=False)
        assert math.isnan(checkpoint["val_mean_mm"]) and checkpoint["metrics"] == {}
        for key, value in checkpoint["model"].items():
            if value.is_floating_point():
                torch.testing.assert_close(value, (a[stage][key] + b[stage][key]) / 2)
            else:  # BatchNorm's batch counter is not averaged
                assert torch.equal(value, a[stage][key])
        assert not torch.equal(checkpoint["model"]["head.weight"], a[stage]["head.weight"])
        assert not torch.equal(checkpoint["model"]["head.weight"], b[stage]["head.weight"])
    # it loads as a cascade, with the averaged weights
    cascade = load_cascade(out, "sax")
    torch.testing.assert_close(cascade.fine.state_dict()["head.bias"],
                               (a["fine"]["head.bias"] + b["fine"]["head.bias"]) / 2)
    run = json.loads((out / "run.json").read_text())
    assert run["soup_of"] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert run["wall_s"] == 150.0 and "metrics" not in run and run["lr"] == 0.00025


def test_runs_of_different_networks_or_unfinished_runs_are_refused(tmp_path, capsys) -> None:
    make_run(tmp_path / "a", seed=1)
    make_run(tmp_path / "wide", seed=2, widths=(8, 16))
    script = soup_script()
    with pytest.raises(SystemExit) as stop:
        script.main([str(tmp_path / "a"), str(tmp_path / "wide"), "--out", str(tmp_path / "soup")])
    assert stop.value.code == 2 and "not one network" in capsys.readouterr().err
    assert not (tmp_path / "soup").exists()
    (tmp_path / "half").mkdir()
    with pytest.raises(SystemExit) as stop:
        script.main([str(tmp_path / "a"), str(tmp_path / "half"), "--out", str(tmp_path / "soup2")])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and "fine_best.pt" in error and "run.json" in error
    assert not (tmp_path / "soup2").exists()
    with pytest.raises(SystemExit) as stop:
        script.main([str(tmp_path / "a"), "--out", str(tmp_path / "soup3")])
    assert stop.value.code == 2 and "two or more" in capsys.readouterr().err
    make_run(tmp_path / "t1", seed=3, kind="t1")
    with pytest.raises(SystemExit) as stop:
        script.main([str(tmp_path / "a"), str(tmp_path / "t1"), "--out", str(tmp_path / "soup4")])
    assert stop.value.code == 2 and "different kinds" in capsys.readouterr().err


def test_the_soup_never_writes_into_a_run_or_an_old_folder(tmp_path, capsys) -> None:
    make_run(tmp_path / "a", seed=1)
    make_run(tmp_path / "b", seed=2)
    before = (tmp_path / "a" / "fine_best.pt").read_bytes()
    script = soup_script()
    for out in (tmp_path / "a", tmp_path / "b"):
        with pytest.raises(SystemExit) as stop:
            script.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)])
        assert stop.value.code == 2 and "not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "a" / "fine_best.pt").read_bytes() == before
    (tmp_path / "empty").mkdir()  # an empty folder is as good as a new one
    assert script.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "empty")]) == 0
