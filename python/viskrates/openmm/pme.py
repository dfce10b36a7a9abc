"""PME hand-off of SO3LR's electrostatics for periodic systems (DESIGN.md §5).

SO3LR's electrostatic kernel ``ke·q_i q_j·erf(r/σ)/r`` (σ = 4 Å) is exactly the long-range part of an Ewald
split with α = 1/σ. Its full periodic sum is therefore the reciprocal-space Ewald sum (minus the self
term), which OpenMM's ``NonbondedForce`` computes with PME when the direct space is switched off.
OpenMM needs fixed charges, so the hand-off splits the energy into

* ``E_PME(q*)``: a ``NonbondedForce`` (PME, α = 1/σ, ``setIncludeDirectSpace(False)``) with fixed charges
  q* taken from the model;
* ``−ke Σ_{r<rc} q*_i q*_j·erf(r/σ)/r·S(r)``: a ``CustomNonbondedForce`` with the same fixed charges;
* ``+ke Σ_{r<rc} q_i q_j·erf(r/σ)/r·S(r)`` with the model's position-dependent charges q(R), inside the
  ML force (:class:`~viskrates.physics.ewald.SwitchedErfCoulomb` replaces the model's own
  electrostatics), so forces include the chain rule through q(R).

The sum is ``E_PME(q*) + ke Σ_{r<rc} (q_i q_j − q*_i q*_j)·erf(r/σ)/r·S(r)``: a smooth function of the
positions for fixed q* (energy is conserved), and equal to the exact periodic sum of the erf kernel when
q = q*. Its energy error is the part of ``(q_i q_j − q*_i q*_j)·erf(r/σ)/r`` not covered by the switched
in-cutoff sum (damped pairs and all periodic images), which grows as the charges drift away from q*.

Its forces are not exact even at q = q*: the exact force contains the chain rule ``−Σ_i φ_i ∂q_i/∂R`` with
the full periodic potential φ_i at atom i, while the hand-off only has the switched in-cutoff part of φ_i
(the PME term has fixed charges). Measured on 210 waters (18.7 Å box, SO3LR lr_cutoff 9 Å, float64; rms
force 420 kJ/mol/nm): rms force error 7.8 kJ/mol/nm at q = q* and 12.5 after a 0.05 Å random
displacement (rms |q − q*| = 0.013 e) with r_s = 0, growing with r_s (51.6 and 59.6 for r_s = 6 Å); the
official shifted-force electrostatics differ from the exact periodic sum by 167 kJ/mol/nm rms. A
smooth switch over the whole cutoff (r_s = 0, the default) gives the best forces: it damps the
truncated potential the way a Wolf sum does.

Semantics of OpenMM 8.6.1 used here (verified against :func:`~viskrates.physics.ewald.ewald_erf_energy`
to 5e-6 kJ/mol on the Reference platform): with ``setIncludeDirectSpace(False)`` the NonbondedForce
returns the reciprocal-space energy, minus the self energy ``ke·α/√π·Σ q²``, minus the neutralising
background ``ke·π Q²/(2Vα²)`` of a charged cell, i.e. the lattice sum of ``erf(αr)/r`` over all pairs and
images except each atom with itself. Exceptions (exclusions) have **no** effect in that mode, because
OpenMM subtracts the excluded pairs' reciprocal-space part in its direct-space loop.
"""
import copy
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import openmm
import torch

from ..physics.ewald import SwitchedErfCoulomb
from ..units import EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM
from .force import OpenMMModel, create_force


def _legal_fft_size(minimum: int) -> int:
    """The smallest integer ≥ ``minimum`` whose prime factors are 2, 3, 5 and 7 (fast FFT sizes)."""
    size = max(int(minimum), 1)
    while True:
        rest = size
        for factor in (2, 3, 5, 7):
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            return size
        size += 1


class FixedChargeRefresh:
    """The fixed charges q* of a hand-off and their refresh from the model (shared by :class:`PMEHandoff` and
    :class:`~viskrates.openmm.chargeembedding.ChargeEmbedding`).

    q* of the ML atoms ``self.atoms`` sit in two forces, returned by the subclass's ``_charge_forces()``: a
    ``NonbondedForce`` (PME; the atoms' Lennard-Jones parameters are kept) and a ``CustomNonbondedForce`` whose
    only per-particle parameter is ``qstar`` (the in-cutoff counter-term). The subclass also provides
    ``model_charges(positions [n_particles, 3] nm, box_vectors [3, 3] nm) -> [n_ML] e``; ``self.charges`` holds
    the current q* ([n_ML] NumPy array, e).
    """

    def set_charges(self, charges: Sequence[float], context: Optional[openmm.Context] = None) -> None:
        """Use ``charges`` ([n_ML] e) as q* in both fixed-charge forces (and in ``context`` if given).

        Raises:
            ValueError: a wrong number of charges.
        """
        charges = np.asarray(charges, dtype=np.float64)
        if charges.shape != (len(self.atoms),):
            raise ValueError(f"expected {len(self.atoms)} charges, got shape {charges.shape}")
        nonbonded, correction = self._charge_forces()
        for atom, charge in zip(self.atoms, charges):
            _, sigma, epsilon = nonbonded.getParticleParameters(atom)
            nonbonded.setParticleParameters(atom, float(charge), sigma, epsilon)
            correction.setParticleParameters(atom, [float(charge)])
        self.charges = charges
        if context is not None:
            nonbonded.updateParametersInContext(context)
            correction.updateParametersInContext(context)

    def refresh_charges(self, context: openmm.Context) -> np.ndarray:
        """Set q* to the model's charges at the Context's current positions and box; returns them (e)."""
        state = context.getState(getPositions=True)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(openmm.unit.nanometer)
        charges = self.model_charges(state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer), box)
        self.set_charges(charges, context)
        return charges


class PMEHandoff(FixedChargeRefresh):
    """The forces of a periodic, fully ML SO3LR System with PME electrostatics, and its charge refresh.

    Build it with :func:`add_pme_handoff`. Attributes: ``ml_force`` (the SO3LR force without its own
    electrostatics but with the in-cutoff term of the model's charges), ``reciprocal_force``
    (``NonbondedForce``, PME, reciprocal space only), ``correction_force`` (``CustomNonbondedForce``, the
    in-cutoff term of the fixed charges), ``charges`` ([N] NumPy array, the current q* in e).

    When to refresh q* (:meth:`refresh_charges`): the Hamiltonian depends on q*, so changing q* changes
    the energy discontinuously (by the error of the hand-off, ~the difference between the old and new
    far-field electrostatics). Refresh between phases, e.g. after minimisation and after equilibration,
    and, for long runs in which the charges drift, every few picoseconds, never inside a stretch whose
    energy conservation you measure.
    """

    def __init__(self, openmm_model: OpenMMModel, ml_force: openmm.Force, reciprocal_force: openmm.NonbondedForce,
                 correction_force: openmm.CustomNonbondedForce, atoms: List[int]):
        self.openmm_model = openmm_model
        self.ml_force = ml_force
        self.reciprocal_force = reciprocal_force
        self.correction_force = correction_force
        self.atoms = atoms
        self.charges = np.zeros(len(atoms))

    def model_charges(self, positions, box_vectors) -> np.ndarray:
        """The model's partial charges (e) of the ML atoms at ``positions`` ([n_particles, 3] nm, all
        particles of the System) in the box ``box_vectors`` ([3, 3] nm, rows)."""
        positions = np.asarray(positions, dtype=np.float64)[self.atoms]
        dtype = self.openmm_model.total_charge.dtype
        with torch.no_grad():
            charges = self.openmm_model.partial_charges(torch.tensor(positions, dtype=dtype),
                                                        torch.tensor(np.asarray(box_vectors), dtype=dtype))
        return charges.double().numpy()

    def _charge_forces(self) -> Tuple[openmm.NonbondedForce, openmm.CustomNonbondedForce]:
        return self.reciprocal_force, self.correction_force


def add_pme_handoff(system: openmm.System, model: torch.nn.Module, atomic_numbers: Sequence[int], positions,
                    total_charge: float = 0.0, atoms: Optional[Sequence[int]] = None,
                    switch_distance: float = 0.0, ewald_error_tolerance: float = 1e-5,
                    backend: str = "python") -> PMEHandoff:
    """Add an SO3LR force with PME electrostatics (the hand-off of this module's docstring) to a periodic System.

    This replaces SO3LR's own electrostatics for periodic systems. The official MD code truncates the erf
    kernel with a shifted force and a switch (5.4→12 Å), which is an approximation forced by the lack of
    k-space (FORMULAS.md §8) and not the training convention (all pairs, no cutoff, in the gas phase).
    The periodic lattice sum of the same erf kernel is the natural periodic extension of the training
    convention: it converges absolutely for a neutral cell, needs no cutoff and no shift, and is what the
    hand-off computes (exactly when q = q*). Energies therefore differ from the shifted-force SO3LR by the
    shift and truncation terms; forces differ mainly beyond ~5 Å. Dispersion, ZBL and the SO3krates
    energy are those of the model, unchanged.

    Args:
        system: a periodic System (its default box is used to size the PME grid; every box width must
            be at least twice the model's lr_cutoff, as for the model itself).
        model: an SO3LR model with a finite ``lr_cutoff`` (Å); its dtype sets the precision.
        atomic_numbers: atomic numbers of the ML atoms, in the order of ``atoms``.
        positions: [n_particles, 3] nm (array or OpenMM Quantity); q* is taken from the model here.
        total_charge: net charge of the ML atoms (e); a charged cell gets OpenMM's neutralising background.
        atoms: the ML atoms (default: all particles). The other particles get zero charge in the added
            forces; their own interactions are the caller's business.
        switch_distance: r_s in nm where the in-cutoff terms start to be switched off; they vanish at the
            model's lr_cutoff. Larger r_s keeps more of the ``q q − q* q*`` energy exact but truncates the
            charge chain-rule force more sharply; 0 (default) gives the smallest force error (module
            docstring).
        ewald_error_tolerance: sets the PME grid with OpenMM's formula ``n = 2αL/(3·tol^(1/5))`` for the
            fixed α = 1/σ.
        backend: of the ML force, see :func:`~viskrates.openmm.create_force`.

    Returns:
        The :class:`PMEHandoff`, whose three forces have been added to ``system``.

    Raises:
        ValueError: a model without a finite lr_cutoff or without erf electrostatics,
            ``atoms`` and ``atomic_numbers`` of different lengths, or a switch distance outside [0, lr_cutoff).
    """
    lr_cutoff = getattr(model, "lr_cutoff", None)
    electrostatics = getattr(model, "electrostatics", None)
    if lr_cutoff is None or electrostatics is None or not hasattr(electrostatics, "sigma"):
        raise ValueError(f"the PME hand-off needs an SO3LR model with a finite lr_cutoff, got "
                         f"{type(model).__name__} with lr_cutoff={lr_cutoff}")
    n_particles = system.getNumParticles()
    atoms = list(range(n_particles)) if atoms is None else [int(a) for a in atoms]
    if len(atoms) != len(atomic_numbers):
        raise ValueError(f"{len(atoms)} atoms but {len(atomic_numbers)} atomic numbers")
    sigma_nm = electrostatics.sigma / NM_TO_ANGSTROM
    cutoff_nm = lr_cutoff / NM_TO_ANGSTROM
    if not 0.0 <= switch_distance < cutoff_nm:
        raise ValueError(f"switch_distance must lie in [0, {cutoff_nm} nm), got {switch_distance} nm")

    handoff_model = copy.deepcopy(model)
    handoff_model.electrostatics = SwitchedErfCoulomb(lr_cutoff, switch_distance * NM_TO_ANGSTROM,
                                                      electrostatics.sigma)
    ml_force = create_force(handoff_model, atomic_numbers, None if len(atoms) == n_particles else atoms,
                            total_charge=total_charge, periodic=True, backend=backend)
    openmm_model = OpenMMModel(handoff_model, atomic_numbers, total_charge, periodic=True).eval()

    alpha = 1.0 / sigma_nm
    box = np.array([[v.value_in_unit(openmm.unit.nanometer) for v in row]
                    for row in system.getDefaultPeriodicBoxVectors()])
    grid = [_legal_fft_size(math.ceil(2.0 * alpha * box[i, i] / (3.0 * ewald_error_tolerance ** 0.2)))
            for i in range(3)]
    reciprocal = openmm.NonbondedForce()
    reciprocal.setName("ViskratesPMEReciprocal")
    reciprocal.setNonbondedMethod(openmm.NonbondedForce.PME)
    # The cutoff only matters for the direct space, which is off; it must still fit the box.
    reciprocal.setCutoffDistance(cutoff_nm)
    reciprocal.setPMEParameters(alpha, *grid)
    reciprocal.setIncludeDirectSpace(False)
    reciprocal.setUseDispersionCorrection(False)
    # ke in kJ/mol·nm from the model's constant, so that this term cancels the ML force's exactly at q = q*
    ke = electrostatics.coulomb_constant * EV_TO_KJ_PER_MOL / NM_TO_ANGSTROM
    correction = openmm.CustomNonbondedForce(f"-{ke!r}*qstar1*qstar2*erf(r/{sigma_nm!r})/r")
    correction.setName("ViskratesPMECorrection")
    correction.addPerParticleParameter("qstar")
    correction.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    correction.setCutoffDistance(cutoff_nm)
    correction.setUseSwitchingFunction(True)
    correction.setSwitchingDistance(switch_distance)
    correction.setUseLongRangeCorrection(False)
    for _ in range(n_particles):
        reciprocal.addParticle(0.0, 1.0, 0.0)
        correction.addParticle([0.0])
    if len(atoms) != n_particles:
        correction.addInteractionGroup(atoms, atoms)
    for force in (ml_force, reciprocal, correction):
        system.addForce(force)

    handoff = PMEHandoff(openmm_model, ml_force, reciprocal, correction, atoms)
    if isinstance(positions, openmm.unit.Quantity):
        positions = positions.value_in_unit(openmm.unit.nanometer)
    handoff.set_charges(handoff.model_charges(positions, box))
    return handoff
