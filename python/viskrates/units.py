"""Unit conversion between the model convention (Å, eV, e) and OpenMM's (nm, kJ/mol, e).

This is the only place where these factors live; the conversion happens in
:class:`viskrates.openmm.OpenMMModel`, at the OpenMM boundary.
"""

#: 1 eV in kJ/mol: e·N_A/1000, exact since the 2019 SI redefinition.
EV_TO_KJ_PER_MOL = 1.602176634e-19 * 6.02214076e23 / 1000.0
#: 1 nm in Å.
NM_TO_ANGSTROM = 10.0
