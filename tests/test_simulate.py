"""The main job (`viskrates simulate`) end to end, and its handling of bad input."""
import os

import numpy as np
import openmm.app as app
import pytest

from viskrates.cli import main
from viskrates.simulate import _read_log

STRUCTURES = os.path.join(os.path.dirname(__file__), "..", "examples", "structures")
ALA2 = os.path.join(STRUCTURES, "alanine-dipeptide-implicit.pdb")
TINY = ["--steps", "6", "--equilibration-steps", "2", "--report-interval", "3", "--minimize-iterations", "5",
        "--no-progress"]


def test_main_job_alanine_dipeptide_in_water(tmp_path, capsys, one_torch_thread):
    out = tmp_path / "run"
    assert main(["simulate", ALA2, "-o", str(out)] + TINY) == 0
    assert sorted(os.listdir(out)) == ["final.pdb", "log.csv", "trajectory.dcd"]
    log = _read_log(str(out / "log.csv"))
    np.testing.assert_array_equal(log["Step"], [3, 6])
    assert np.all(np.isfinite(log["Total Energy (kJ/mole)"]))
    assert np.all((log["Temperature (K)"] > 50) & (log["Temperature (K)"] < 1000))
    final = app.PDBFile(str(out / "final.pdb"))
    residues = [r.name for r in final.topology.residues()]
    assert residues[:3] == ["ACE", "ALA", "NME"] and residues.count("HOH") > 100
    # DCD: 2 frames of every atom (header + per-frame records of 3 float32 blocks)
    assert (out / "trajectory.dcd").stat().st_size > 2 * 3 * 4 * final.topology.getNumAtoms()
    printed = capsys.readouterr().out
    assert "ns/day" in printed and "ML region: 22" in printed


def _strip_hydrogens(src, dst):
    with open(src) as handle, open(dst, "w") as out:
        for line in handle:
            if line.startswith(("ATOM", "HETATM")) and line[12:16].strip().lstrip("0123456789").startswith("H"):
                continue
            out.write(line)


def test_no_hydrogens_without_fixing_is_refused(tmp_path, capsys):
    pdb = tmp_path / "noH.pdb"
    _strip_hydrogens(ALA2, pdb)
    out = tmp_path / "run"
    assert main(["simulate", str(pdb), "-o", str(out), "--no-fix"] + TINY) == 2
    assert "no hydrogen atoms" in capsys.readouterr().err
    assert not out.exists()


def test_bad_ml_regions_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", ALA2, "-o", str(out), "--ml-region", "7-9"] + TINY) == 2
    assert "not in the structure" in capsys.readouterr().err
    # with salt, --ml-region all puts Na+/Cl- into the ML region: SO3LR has no parameters for them
    assert main(["simulate", ALA2, "-o", str(out), "--ml-region", "all", "--ionic-strength", "0.15"] + TINY) == 2
    assert "Na (Z=11)" in capsys.readouterr().err
    assert not out.exists()


def test_missing_file(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "nope.pdb"), "-o", str(tmp_path / "run")] + TINY) == 2
    assert "does not exist" in capsys.readouterr().err
