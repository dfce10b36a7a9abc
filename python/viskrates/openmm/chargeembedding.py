"""ML/MM charge embedding: the ML region's predicted charges q(R) interact with the MM charges (openmm-ml plugin).

Registered as ``viskrates_charge`` in the ``openmmml.embeddings`` entry-point group, so that
``MLPotential('so3lr').createMixedSystem(topology, system, atoms, embedding='viskrates_charge', ...)``
builds it. It is openmm-ml's mechanical embedding (ML–ML bonded and nonbonded force-field terms removed,
ML–MM Lennard-Jones kept, ML–ML interactions with other periodic images from the force field's PME) except
for the ML–MM Coulomb energy, which uses the model's position-dependent charges q(R) instead of the force
field's charges of the ML atoms.

Energy (ke the Coulomb constant, i ∈ ML, j ∈ MM):

``E = E_FF[q_ML := q*] + E_SO3LR(ML) + ke Σ_{i,j: r_ij<rc} (q_i(R) − q*_i)·q_j·V_SF(r_ij)``,
``V_SF(r) = 1/r − 1/rc + (r − rc)/rc²``

* ``E_FF[q_ML := q*]``: the force field's System as the mechanical embedding leaves it, with the charges of
  the ML atoms in its ``NonbondedForce`` replaced by fixed charges q* taken from the model. Its PME (the
  force field's own α, direct and reciprocal space) thus gives the exact periodic 1/r Coulomb energy of
  every MM–MM pair, every ML–MM pair (with q*) and every ML atom with the periodic images of the ML region
  (with q*); the ML–ML pairs of the same image are excluded (the model computes them).
* ``E_SO3LR(ML)``: the model on the ML atoms, with its own electrostatics, exactly as in the mechanical
  embedding.
* the last sum: the in-cutoff correction from q* to q(R), with the shifted-force Coulomb kernel V_SF
  (value and force vanish at rc; the α → 0 limit of the damped shifted force of Fennell & Gezelter,
  J. Chem. Phys. 124, 234104 (2006)). Its q(R) half is evaluated inside the ML force
  together with the model (:class:`ChargeEmbeddedModel`), so forces include the chain rule through q(R);
  its −q* half is a ``CustomNonbondedForce`` (ML × MM interaction group) so that q* can be refreshed.

This is the PME hand-off of :mod:`viskrates.openmm.pme` (fixed charges q* in a PME force, in-cutoff
correction with the model's charges, refreshable q*) applied to the ML–MM pairs. Two differences are
deliberate:

* **1/r, not erf(r/σ)/r, for ML–MM pairs.** SO3LR's erf damping describes the overlap of its own
  Gaussian-smeared charges and was trained on ML–ML pairs only; the MM charges are point charges of a force
  field parametrised with the bare 1/r, and every ML–MM hydrogen bond would lose more than half of its
  Coulomb energy to the damping (erf(1.8 Å/4 Å) = 0.48). The ML–MM kernel is therefore the force field's 1/r.
* **No second PME.** For the 1/r kernel the Ewald splitting parameter is arbitrary, so the force field's
  own PME already is the fixed-charge PME of the hand-off: putting q* into it makes every pair appear in
  exactly one PME sum (no double counting by construction: the MM–MM pairs are computed once, with the force
  field's charges) and costs no extra FFT. A reciprocal-only α = 1/σ force would have to carry the MM charges
  too and then subtract its MM–MM part with a third PME.

The energy equals the exact periodic 1/r ML–MM Coulomb energy with the model's charges when q = q*. For
q ≠ q* the correction is ``Σ_i (q_i − q*_i)·φ_i`` with the shifted-force potential φ_i of the MM charges
within rc in place of the exact periodic potential; a constant offset of φ over the ML region does not
matter (Σ q = Σ q* = the region's charge). The shift neutralises the charge that an atom-based cutoff
sphere cuts out of whole molecules (Wolf et al., J. Chem. Phys. 110, 8254 (1999)), which is what makes this
kernel accurate. Measured at the 6 ML atoms of tests/test_charge_embedding.py (2 SO3LR waters in 185
TIP3P waters, rc = 8 Å, three random 0.1 Å displacements, mean over the region removed): rms error of φ
against the exact Ewald potential 6–7 kJ/mol/e (variation of φ over the region: ~110 kJ/mol/e rms), against
39 kJ/mol/e for 1/r with OpenMM's switch over the whole cutoff (the kernel of :mod:`viskrates.openmm.pme`)
and 81–96 kJ/mol/e with the switch from 6 Å. The energy is a smooth function of the positions for fixed
q* (forces continuous at rc), so energy is conserved between refreshes.

Covalent bonds between the ML and the MM region are not supported (a clear error names them): with charge
embedding a link atom's ML charge and the MM charges of the bonded neighbours (1-2 and 1-3 pairs, which the
force field excludes) would need a charge-redistribution scheme that SO3LR was not trained for. Select
whole molecules (e.g. a ligand and water molecules) as the ML region.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import openmm
import openmm.app
import torch
from openmmml.embeddings import utilities
from openmmml.embeddings.mechanicalembedding import MechanicalEmbedding
from openmmml.mlpotential import Embedding, EmbeddingFactory, MLPotentialImpl
from torch import Tensor

from ..physics.zbl import COULOMB_CONSTANT
from ..units import EV_TO_KJ_PER_MOL, NM_TO_ANGSTROM
from .force import OpenMMModel, create_force
from .mlpotential import ViskratesPotentialImpl
from .pme import FixedChargeRefresh

_METHOD_NAMES = {getattr(openmm.NonbondedForce, name): name
                 for name in ("NoCutoff", "CutoffNonPeriodic", "CutoffPeriodic", "Ewald", "PME", "LJPME")}
_EWALD_METHODS = (openmm.NonbondedForce.Ewald, openmm.NonbondedForce.PME, openmm.NonbondedForce.LJPME)


class ChargeEmbeddedModel(torch.nn.Module):
    """An SO3LR model plus the Coulomb energy of its charges q(R) with fixed MM point charges (Å, eV).

    ``energy = E_model(ML atoms) + ke Σ_{i∈ML, j∈MM, r_ij<rc} q_i(R)·q_j·V_SF(r_ij)`` with minimum-image
    distances in a periodic box and the shifted-force Coulomb kernel ``V_SF(r) = 1/r − 1/rc + (r − rc)/rc²``
    (undamped: the ML–MM kernel is the force field's 1/r; module docstring). The charge embedding's
    ``CustomNonbondedForce`` subtracts the same sum with q*, exactly when q = q*.

    Call signature of a viskrates model, so that :class:`~viskrates.openmm.OpenMMModel` wraps it:
    ``forward(atomic_numbers [n_ML] int64, positions [n_particles, 3] Å (all particles of the System),
    box [3, 3] Å or None, batch None, total_charge [1] e)`` returns ``energy`` [1] eV and
    ``partial_charges`` [n_ML] e (the model's), in the model's dtype.

    Args:
        model: a charge-predicting model (SO3LR) in Å/eV.
        ml_atoms: System indices of the ML atoms (order of ``atomic_numbers``).
        mm_atoms: System indices of the charged MM atoms.
        mm_charges: their charges (e).
        cutoff: rc in Å; at most half the narrowest box width (minimum image).

    Raises:
        ValueError: ``mm_atoms`` and ``mm_charges`` of different lengths, or a non-positive cutoff.
    """

    def __init__(self, model: torch.nn.Module, ml_atoms: Sequence[int], mm_atoms: Sequence[int],
                 mm_charges: Sequence[float], cutoff: float):
        super().__init__()
        if len(mm_atoms) != len(mm_charges):
            raise ValueError(f"{len(mm_atoms)} MM atoms but {len(mm_charges)} MM charges")
        if not cutoff > 0.0:
            raise ValueError(f"the embedding cutoff must be positive, got {cutoff} Å")
        self.model = model
        self.supported_elements: List[int] = [int(z) for z in model.supported_elements]
        dtype = next(model.parameters()).dtype
        self.register_buffer("ml_atoms", torch.tensor(list(ml_atoms), dtype=torch.long))
        self.register_buffer("mm_atoms", torch.tensor(list(mm_atoms), dtype=torch.long))
        self.register_buffer("mm_charges", torch.tensor(list(mm_charges), dtype=dtype))
        self.cutoff = float(cutoff)
        self.coulomb_constant = COULOMB_CONSTANT

    def forward(self, atomic_numbers: Tensor, positions: Tensor, box: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, total_charge: Optional[Tensor] = None) -> Dict[str, Tensor]:
        ml_positions = positions.index_select(0, self.ml_atoms)
        out = self.model(atomic_numbers, ml_positions, box, batch, total_charge)
        charges = out["partial_charges"]
        mm_positions = positions.index_select(0, self.mm_atoms)
        # The pairs within rc and their periodic shifts are found without autograd on the dense [n_ML, n_MM]
        # block; only those pairs enter the differentiable energy, so that memory stays O(pairs within rc)
        # in large solvent boxes.
        raw = mm_positions.detach().unsqueeze(0) - ml_positions.detach().unsqueeze(1)
        imaged = raw if box is None else _minimum_image(raw, box.to(raw.dtype))
        pairs = (torch.linalg.vector_norm(imaged, dim=-1) < self.cutoff).nonzero()
        first = pairs[:, 0]
        second = pairs[:, 1]
        shifts = imaged[first, second] - raw[first, second]
        vectors = mm_positions.index_select(0, second) - ml_positions.index_select(0, first) + shifts
        distances = torch.linalg.vector_norm(vectors, dim=-1)
        rc = self.cutoff
        kernel = 1.0 / distances - 1.0 / rc + (distances - rc) / (rc * rc)
        potential = torch.zeros_like(charges).index_add_(0, first, self.mm_charges.index_select(0, second) * kernel)
        embedding = self.coulomb_constant * (charges * potential).sum()
        return {"energy": out["energy"] + embedding, "partial_charges": charges}


def _minimum_image(vectors: Tensor, box: Tensor) -> Tensor:
    """Minimum-image ``vectors`` [..., 3] in OpenMM's reduced triclinic box [3, 3] (rows; a ∥ x, b in the xy
    plane): shifting along c, b, a in turn is exact for lengths up to half the narrowest box width."""
    vectors = vectors - torch.round(vectors[..., 2:3] / box[2, 2]) * box[2]
    vectors = vectors - torch.round(vectors[..., 1:2] / box[1, 1]) * box[1]
    return vectors - torch.round(vectors[..., 0:1] / box[0, 0]) * box[0]


class ChargeEmbedding(Embedding, FixedChargeRefresh):
    """The ``viskrates_charge`` embedding of openmm-ml (module docstring), and the q* refresh of its System.

    ``MLPotential('so3lr').createMixedSystem(topology, system, atoms, embedding='viskrates_charge',
    returnInfo=True, positions=..., ...)`` returns a dict whose ``'chargeEmbedding'`` entry is this object.
    Arguments understood besides those of the potential (precision, charge, backend, modelBackend, see
    :class:`~viskrates.openmm.mlpotential.ViskratesPotentialImpl`):

    * ``positions``: [n_particles, 3] nm (array or Quantity). q* are the model's charges at these positions.
      Without it, q* start as the force field's charges of the ML atoms; call :meth:`refresh_charges` once
      the Context has positions.
    * ``embeddingCutoff``: rc of the correction (nm or Quantity); default and maximum: the cutoff of the
      force field's ``NonbondedForce``.

    After creation: ``nonbonded_force`` (the force field's NonbondedForce, which holds q* for the ML atoms),
    ``correction_force`` (the −q* half of the correction), ``ml_force`` (model + q(R) half), ``atoms``,
    ``charges`` (the current q*, [n_ML] e).

    When to refresh q* (:meth:`refresh_charges`): changing q* changes the energy discontinuously (by the
    error of the truncated correction), so refresh between phases (after minimisation, after
    equilibration) and, in long runs where the charges drift, every few picoseconds, never inside a stretch
    whose energy conservation you measure.
    """

    def __init__(self):
        self.nonbonded_force: Optional[openmm.NonbondedForce] = None
        self.correction_force: Optional[openmm.CustomNonbondedForce] = None
        self.ml_force: Optional[openmm.Force] = None
        self.openmm_model: Optional[OpenMMModel] = None
        self.atoms: List[int] = []
        self.charges = np.zeros(0)

    def createMixedSystem(self, potential: MLPotentialImpl, topology: openmm.app.Topology, system: openmm.System,
                          atoms: List[int], forceGroup: int, interpolate: bool, returnInfo: bool = False, **args):
        """Called by ``MLPotential.createMixedSystem``; see the class docstring for the arguments.

        Raises:
            ValueError: interpolation requested, a potential that is not a viskrates model predicting charges,
                an ML region bonded to the MM region (the bonds are named), no or several NonbondedForces, a
                NonbondedForce without Ewald/PME electrostatics, an ML–MM exception of the force field, the
                ``mlLongRange`` option, or a cutoff larger than the force field's.
        """
        if interpolate:
            raise ValueError("the viskrates_charge embedding does not support interpolate=True (the ML charges "
                             "would have to be interpolated too); use embedding='mechanical' for interpolation")
        if not isinstance(potential, ViskratesPotentialImpl) or potential.name not in ("so3lr",):
            raise ValueError("the viskrates_charge embedding needs a model that predicts partial charges: "
                             f"MLPotential('so3lr'), got {getattr(potential, 'name', type(potential).__name__)!r}")
        if "mlLongRange" in args:
            raise ValueError("the viskrates_charge embedding does not take mlLongRange: ML–ML interactions with "
                             "periodic images always use the force field's PME with the ML charges q*")
        link_bonds = utilities.findLinkBonds(topology, atoms)
        if link_bonds:
            names = {atom.index: f"{atom.residue.name}{atom.residue.id}:{atom.name} (index {atom.index})"
                     for atom in topology.atoms()}
            bonds = ", ".join(f"{names[ml]}–{names[mm]}" for ml, mm in link_bonds)
            raise ValueError(f"the ML region is covalently bonded to the MM region ({bonds}); the "
                             "viskrates_charge embedding supports no link atoms, select whole molecules or use "
                             "embedding='mechanical'")
        nonbonded = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
        if len(nonbonded) != 1:
            raise ValueError(f"the viskrates_charge embedding needs exactly one NonbondedForce, found {len(nonbonded)}")
        method = nonbonded[0].getNonbondedMethod()
        if method not in _EWALD_METHODS:
            raise ValueError("the viskrates_charge embedding needs a periodic force field with PME, Ewald or LJPME "
                             f"electrostatics, got {_METHOD_NAMES.get(method, method)} (createSystem(..., "
                             "nonbondedMethod=app.PME))")
        ml_set = set(atoms)
        for index in range(nonbonded[0].getNumExceptions()):
            i, j, *_ = nonbonded[0].getExceptionParameters(index)
            if (i in ml_set) != (j in ml_set):
                raise ValueError(f"the force field has an exception between ML atom {i if i in ml_set else j} and "
                                 f"MM atom {j if i in ml_set else i}; the viskrates_charge embedding supports "
                                 "none (select whole molecules)")
        ff_cutoff = nonbonded[0].getCutoffDistance().value_in_unit(openmm.unit.nanometer)
        cutoff = _nanometers(args.pop("embeddingCutoff", ff_cutoff))
        if not 0.0 < cutoff <= ff_cutoff + 1e-12:
            raise ValueError(f"embeddingCutoff must lie in (0, {ff_cutoff}] nm (the force field's cutoff), "
                             f"got {cutoff} nm")
        positions = args.pop("positions", None)
        if positions is not None:
            if isinstance(positions, openmm.unit.Quantity):
                positions = positions.value_in_unit(openmm.unit.nanometer)
            positions = np.asarray(positions, dtype=np.float64)
            if positions.shape != (system.getNumParticles(), 3):
                raise ValueError(f"positions must have shape ({system.getNumParticles()}, 3) nm, got "
                                 f"{positions.shape}")

        def add_forces(new_topology, new_system, ml_atoms, group, **force_args):
            self._add_forces(potential, new_topology, new_system, list(ml_atoms), group, cutoff, positions,
                             **force_args)

        info = MechanicalEmbedding().createMixedSystem(_EmbeddedPotential(add_forces), topology, system, atoms,
                                                       forceGroup, False, returnInfo=True, **args)
        if not returnInfo:
            return info["system"]
        info["chargeEmbedding"] = self
        return info

    def _add_forces(self, potential, topology: openmm.app.Topology, system: openmm.System, atoms: List[int],
                    force_group: int, cutoff: float, positions: Optional[np.ndarray],
                    precision: str = "single", charge: Optional[float] = None, backend: str = "python",
                    modelBackend: Optional[str] = None, **_):
        nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
        model, numbers, charge = potential.create_model_for(topology, system, atoms, precision, charge, modelBackend)
        ml_set = set(atoms)
        ff_charges = np.array([nonbonded.getParticleParameters(i)[0].value_in_unit(openmm.unit.elementary_charge)
                               for i in range(system.getNumParticles())])
        mm_atoms = [i for i in range(system.getNumParticles()) if i not in ml_set and ff_charges[i] != 0.0]
        embedded = ChargeEmbeddedModel(model, atoms, mm_atoms, ff_charges[mm_atoms], cutoff * NM_TO_ANGSTROM)
        self.ml_force = create_force(embedded, numbers, None, total_charge=charge, periodic=True, backend=backend)
        self.ml_force.setForceGroup(force_group)
        self.openmm_model = OpenMMModel(embedded, numbers, charge, periodic=True).eval()

        # ke in kJ/mol·nm from the model's constant, so that this term cancels the ML force's q(R) half
        # exactly at q = q*
        ke = COULOMB_CONSTANT * EV_TO_KJ_PER_MOL / NM_TO_ANGSTROM
        correction = openmm.CustomNonbondedForce(
            f"-{ke!r}*qstar1*qstar2*(1/r - {1.0 / cutoff!r} + (r - {cutoff!r})*{1.0 / cutoff ** 2!r})")
        correction.setName("ViskratesChargeEmbeddingCorrection")
        correction.addPerParticleParameter("qstar")
        correction.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
        correction.setCutoffDistance(cutoff)
        correction.setUseLongRangeCorrection(False)
        for i in range(system.getNumParticles()):
            correction.addParticle([0.0 if i in ml_set else float(ff_charges[i])])
        # The CPU and GPU platforms require every nonbonded force to have the NonbondedForce's exclusions; none
        # of them is an ML–MM pair (checked above), so they do not change the interaction group's sum.
        for index in range(nonbonded.getNumExceptions()):
            i, j, *_ = nonbonded.getExceptionParameters(index)
            correction.addExclusion(i, j)
        correction.addInteractionGroup(atoms, mm_atoms)
        correction.setForceGroup(force_group)
        system.addForce(self.ml_force)
        system.addForce(correction)

        self.nonbonded_force = nonbonded
        self.correction_force = correction
        self.atoms = atoms
        if positions is None:
            self.set_charges(ff_charges[atoms])
        else:
            box = np.array([[v.value_in_unit(openmm.unit.nanometer) for v in row]
                            for row in system.getDefaultPeriodicBoxVectors()])
            self.set_charges(self.model_charges(positions, box))

    def model_charges(self, positions, box_vectors) -> np.ndarray:
        """The model's partial charges (e) of the ML atoms at ``positions`` ([n_particles, 3] nm, all particles)
        in the box ``box_vectors`` ([3, 3] nm, rows)."""
        dtype = self.openmm_model.total_charge.dtype
        with torch.no_grad():
            charges = self.openmm_model.partial_charges(torch.tensor(np.asarray(positions), dtype=dtype),
                                                        torch.tensor(np.asarray(box_vectors), dtype=dtype))
        return charges.double().numpy()

    def _charge_forces(self) -> Tuple[openmm.NonbondedForce, openmm.CustomNonbondedForce]:
        return self.nonbonded_force, self.correction_force


class ChargeEmbeddingFactory(EmbeddingFactory):
    """Factory behind the ``viskrates_charge`` entry point of ``openmmml.embeddings``."""

    def createEmbedding(self, name: str, **args) -> Embedding:
        return ChargeEmbedding()


class _EmbeddedPotential(MLPotentialImpl):
    """Lets openmm-ml's mechanical embedding prepare the System and call back for the ML forces."""

    def __init__(self, add_forces):
        self._add_forces = add_forces

    def addForces(self, topology, system, atoms, forceGroup, **args):
        self._add_forces(topology, system, atoms, forceGroup, **args)

    def getMLLongRange(self) -> bool:
        # The ML–ML pairs of other periodic images stay in the force field's PME (with q*).
        return False


def _nanometers(value) -> float:
    if isinstance(value, openmm.unit.Quantity):
        return float(value.value_in_unit(openmm.unit.nanometer))
    return float(value)


class WaterBox(NamedTuple):
    """A solvent box with an ML region, as :func:`water_box_with_ml_waters` builds it."""

    topology: openmm.app.Topology
    system: openmm.System       # the force field's System (no ML force yet)
    positions: np.ndarray       # [n_particles, 3] float64, nm
    box: np.ndarray             # [3, 3] float64, nm, rows are the box vectors
    ml_atoms: List[int]         # System indices of the ML waters (O, H, H per water)


def water_box_with_ml_waters(box_edge: float = 1.8, cutoff: float = 0.8, ml_waters: int = 2,
                             ewald_error_tolerance: float = 1e-6, rigid_water: bool = False) -> WaterBox:
    """A cubic box of amber14 TIP3P water whose ML region is a few neighbouring waters: the system on which the
    ``viskrates_charge`` embedding is tested and measured (tests/test_charge_embedding.py,
    examples/charge_embedding_accuracy.py).

    OpenMM's Modeller fills the box with its pre-equilibrated TIP3P water; the System has PME electrostatics with
    the given cutoff and Ewald tolerance, no dispersion correction (it would add a constant), flexible water
    without constraints unless ``rigid_water``. The ML region is water 0 and the ``ml_waters − 1`` waters whose
    oxygens are nearest to its oxygen (minimum image), water 0 first, then by distance.

    Args:
        box_edge: edge of the cubic box (nm).
        cutoff: nonbonded cutoff (nm), at most half the box edge.
        ml_waters: number of ML waters (≥ 1).
        ewald_error_tolerance: of the force field's PME.
        rigid_water: rigid TIP3P (SETTLE) instead of flexible water.

    Raises:
        ValueError: ``ml_waters`` below 1 or above the number of waters in the box, or a cutoff larger than half
            the box edge.
    """
    if not 0.0 < cutoff <= 0.5 * box_edge:
        raise ValueError(f"the cutoff must lie in (0, {0.5 * box_edge}] nm (half the box edge), got {cutoff} nm")
    forcefield = openmm.app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = openmm.app.Modeller(openmm.app.Topology(), [])
    modeller.addSolvent(forcefield, boxSize=openmm.Vec3(box_edge, box_edge, box_edge) * openmm.unit.nanometer)
    n_waters = modeller.topology.getNumResidues()
    if not 1 <= ml_waters <= n_waters:
        raise ValueError(f"ml_waters must lie in [1, {n_waters}] (the waters in the box), got {ml_waters}")
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=openmm.app.PME,
                                     nonbondedCutoff=cutoff * openmm.unit.nanometer, rigidWater=rigid_water,
                                     constraints=None, ewaldErrorTolerance=ewald_error_tolerance)
    next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)).setUseDispersionCorrection(False)
    positions = np.array(modeller.getPositions().value_in_unit(openmm.unit.nanometer), dtype=np.float64)
    waters = list(modeller.topology.residues())
    oxygens = [next(atom.index for atom in water.atoms() if atom.element.symbol == "O") for water in waters]
    separation = positions[oxygens] - positions[oxygens[0]]
    separation -= np.round(separation / box_edge) * box_edge
    # a stable sort keeps water 0 (distance 0) first
    nearest = np.argsort(np.linalg.norm(separation, axis=1), kind="stable")[:ml_waters]
    ml_atoms = [atom.index for index in nearest for atom in waters[index].atoms()]
    return WaterBox(modeller.topology, system, positions, np.eye(3) * box_edge, ml_atoms)
