"""SO3LR: the pretrained SO3krates network plus ZBL repulsion, electrostatics and vdW-QDO dispersion.

A. Kabylda, J. T. Frank, S. Suárez-Dou, A. Khabibrakhmanov, L. Medrano Sandonas, O. T. Unke, S. Chmiela,
K.-R. Müller, A. Tkatchenko, "Molecular Simulations with a Pretrained Neural Network and Universal
Pairwise Force Fields", J. Am. Chem. Soc. (2025). This is a re-implementation of the official JAX code
(general-molecular-simulations/so3lr@5ec39b9 with mlff v1.0) from its numerical specification
(models/so3lr/FORMULAS.md); it loads the official parameters, packaged in ``viskrates/data/so3lr``.
"""
import os
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..elements import ELEMENT_SYMBOLS, describe_element
from ..ops import long_range_energy, neighbor_list
from ..physics.dispersion import FREE_ATOM_REFERENCE, QDODispersion
from ..physics.electrostatics import Electrostatics
from ..physics.zbl import ZBLRepulsion, sum_per_structure
from .so3krates import SO3krates

PRETRAINED_PARAMETERS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     "data", "so3lr", "so3lr_params.npz")
"""The official SO3LR parameters (flax tree flattened to '/'-joined npz keys; see data/so3lr/SOURCE.md)."""

SHORT_RANGE_CUTOFF = 4.5
"""Cutoff of SO3LR's message passing and ZBL term (Å)."""

_NUM_ELEMENTS = len(ELEMENT_SYMBOLS)


class SO3LR(nn.Module):
    """The SO3LR machine-learned force field (pretrained), a TorchScript-able ``torch.nn.Module``.

    ``E = Σ_i E_i^NN + E_ZBL + E_elec + E_disp`` (Kabylda et al., J. Am. Chem. Soc. 2025):

    * ``E_i^NN``: SO3krates atomic energies (Frank et al., Nat. Commun. 15, 6539 (2024);
      :class:`~viskrates.models.so3krates.SO3krates`) on the short-range graph (4.5 Å), scaled and shifted
      per element;
    * ``E_ZBL``: learned ZBL repulsion on the short-range graph (:class:`~viskrates.physics.ZBLRepulsion`);
    * ``E_elec``: erf-damped Coulomb energy of the predicted partial charges, which add up to the total
      charge of each structure (:class:`~viskrates.physics.Electrostatics`);
    * ``E_disp``: vdW-QDO dispersion from predicted Hirshfeld ratios (:class:`~viskrates.physics.QDODispersion`).

    There is no Ewald sum and no per-element energy shift: only relative energies are meaningful. The
    float32 quantities of the official float64 code are reproduced (FORMULAS §12), so float64 results
    match the official ones to ~1e-11 eV for neutral structures.

    Args:
        lr_cutoff: cutoff of electrostatics and dispersion in Å. Finite (official default 12, gas-phase
            recommendation 1000): shifted-force Coulomb with a switch from 0.45·lr_cutoff to lr_cutoff,
            dispersion switched off over the last ``dispersion_damping`` Å. ``None``: the training
            convention, plain erf-Coulomb and undamped dispersion over *all* pairs of a structure (open
            boundaries only; O(N²) memory).
        dispersion_damping: width of the dispersion switch in Å (default 2); ignored when lr_cutoff is None.
        parameters: an ``.npz`` file with the official parameter tree (keys as in
            ``so3lr_params.npz``); default: the packaged pretrained parameters. They are loaded in the
            default dtype (float32; ``model.double()`` for float64, exact) and frozen
            (``requires_grad=False``; call ``model.requires_grad_(True)`` to train).
        backend: ``'reference'`` (default; pure PyTorch, differentiable twice, for training on forces) or
            ``'fused'`` (SO3krates filters once per pair and the fused ``viskrates::euclidean_attention``
            op with a C++ backward: same energies, forces and charges, several times faster; forces only,
            double backward raises a RuntimeError). See :class:`~viskrates.models.so3krates.SO3krates`. With a
            finite lr_cutoff the fused backend also evaluates electrostatics and dispersion with the
            ``viskrates::long_range_energy`` op (:func:`viskrates.ops.long_range_energy`).

    Attributes:
        cutoff: the largest neighbour-list cutoff used, ``max(4.5, lr_cutoff)`` Å (4.5 for lr_cutoff=None).
        supported_elements: ``[1, 6, 7, 8, 9, 15, 16, 17]`` (H, C, N, O, F, P, S, Cl).

    ``forward(atomic_numbers, positions, box=None, batch=None, total_charge=None)``:
        atomic_numbers: [N] int64. positions: [N, 3] Å (cast to the model's dtype, ``model.double()``).
        box: [3, 3] Å, rows are the box vectors, or None (open boundaries). Each pair interacts through
            its minimum image only, so every box width must be ≥ 2·cutoff (ValueError otherwise).
        batch: [N] int64 sorted structure index, or None (one structure); open boundaries only.
        total_charge: [B] net charge of each structure in e, or None (neutral).

        Returns a dict of tensors in the model's dtype:
        ``energy`` [B] eV; ``energy_so3krates``, ``energy_zbl``, ``energy_elec``, ``energy_disp`` [B] eV;
        ``partial_charges`` [N] e (sum to total_charge per structure); ``hirshfeld_ratios`` [N];
        ``dipole`` [B, 3] e·Å, ``Σ_i q_i R_i`` of the given (unwrapped) positions, meaningless for
        periodic systems. Forces (eV/Å) are ``−∂energy/∂positions`` by autograd; they include the
        dependence of the charges and Hirshfeld ratios on the positions.

    Raises:
        ValueError: elements without parameters (named, with the supported list), NaN/inf positions, a
            periodic box thinner than 2·cutoff, a box with lr_cutoff=None, a batch with a box,
            inconsistent shapes, or an unknown backend.
    """

    lr_cutoff: Optional[float]
    cutoff: float
    supported_elements: List[int]
    _symbols: List[str]

    def __init__(self, lr_cutoff: Optional[float] = 12.0, dispersion_damping: Optional[float] = 2.0,
                 parameters: Optional[str] = None, backend: str = "reference"):
        super().__init__()
        if lr_cutoff is not None and not lr_cutoff > 0:
            raise ValueError(f"lr_cutoff must be a positive distance in Å or None, got {lr_cutoff}")
        self.lr_cutoff = None if lr_cutoff is None else float(lr_cutoff)
        self.sr_cutoff = SHORT_RANGE_CUTOFF
        self.cutoff = SHORT_RANGE_CUTOFF if lr_cutoff is None else max(SHORT_RANGE_CUTOFF, float(lr_cutoff))
        self.supported_elements = sorted(FREE_ATOM_REFERENCE.keys())
        self._symbols = list(ELEMENT_SYMBOLS)
        supported = torch.zeros(_NUM_ELEMENTS, dtype=torch.bool)
        supported[self.supported_elements] = True
        self.register_buffer("element_supported", supported, persistent=False)

        params = np.load(PRETRAINED_PARAMETERS if parameters is None else parameters)
        zbl = "params/observables_0/zbl_repulsion/"
        self.network = SO3krates(num_elements=_NUM_ELEMENTS, cutoff=SHORT_RANGE_CUTOFF, backend=backend)
        self.energy_hidden = nn.Linear(128, 128)
        self.energy_out = nn.Linear(128, 1)
        self.atomic_scales = nn.Parameter(torch.ones(_NUM_ELEMENTS))
        self.atomic_offsets = nn.Parameter(torch.zeros(_NUM_ELEMENTS))
        self.charge_hidden = nn.Linear(128, 128)
        self.charge_out = nn.Linear(128, 1)
        self.charge_offsets = nn.Parameter(torch.zeros(100))
        self.hirshfeld_hidden = nn.Linear(128, 64)
        self.hirshfeld_out = nn.Linear(64, 64)
        self.hirshfeld_offsets = nn.Parameter(torch.zeros(100))
        self.hirshfeld_weights = nn.Parameter(torch.zeros(100, 64))
        self.zbl = ZBLRepulsion([float(params[zbl + f"a{k}"][0]) for k in range(1, 5)],
                                [float(params[zbl + f"c{k}"][0]) for k in range(1, 5)],
                                float(params[zbl + "p"][0]), float(params[zbl + "d"][0]),
                                cutoff=SHORT_RANGE_CUTOFF)
        self.electrostatics = Electrostatics(self.lr_cutoff)
        self.dispersion = QDODispersion(self.lr_cutoff, None if lr_cutoff is None else dispersion_damping)
        self._load_official_parameters(params)
        # Forces need gradients with respect to positions only; TorchScript's autodiff would otherwise also
        # form every weight gradient (~1.6x slower). Fine-tuning: model.requires_grad_(True).
        self.requires_grad_(False)

    def _load_official_parameters(self, params) -> None:
        """Copy the official (flax) arrays into this module's layout; every parameter must be covered."""
        used = set()
        assigned = set()

        def get(key: str) -> Tensor:
            full = "params/" + key
            if full not in params.files:
                raise ValueError(f"SO3LR parameter file lacks the array {full!r}")
            used.add(full)
            return torch.from_numpy(np.asarray(params[full], dtype=np.float32))

        def put(parameter: nn.Parameter, value: Tensor) -> None:
            if tuple(parameter.shape) != tuple(value.shape):
                raise ValueError(f"SO3LR parameter shape mismatch: expected {tuple(parameter.shape)}, "
                                 f"got {tuple(value.shape)}")
            with torch.no_grad():
                parameter.copy_(value)
            assigned.add(id(parameter))

        def dense(linear: nn.Linear, key: str) -> None:
            put(linear.weight, get(key + "/kernel").T)
            if linear.bias is not None:
                put(linear.bias, get(key + "/bias"))

        net = self.network
        put(net.element_embedding, get("feature_embeddings_0/Embed_0/embedding"))
        charge = "feature_embeddings_1/ChargeSpinEmbedSparse_0/"
        put(net.charge_embedding.element_queries, get(charge + "Embed_0/embedding"))
        put(net.charge_embedding.keys, get(charge + "Embed_1/embedding"))
        put(net.charge_embedding.values, get(charge + "Embed_2/embedding"))
        dense(net.charge_embedding.residual_in, charge + "Residual_0/layers_0")
        dense(net.charge_embedding.residual_out, charge + "Residual_0/layers_1")
        # The spin embedding (feature_embeddings_2) is exactly zero for S = 0, the only value the
        # official front-ends use; it is not part of this model.
        used.update(k for k in params.files if k.startswith("params/feature_embeddings_2/"))
        for index, layer in enumerate(net.layers):
            prefix = f"layers_{index}/"
            attention = prefix + "attention_block/"
            for which in ("1", "2"):
                dense(getattr(layer, f"radial_filter{which}_in"), attention + f"radial_filter{which}_layer_1")
                dense(getattr(layer, f"radial_filter{which}_out"), attention + f"radial_filter{which}_layer_2")
                dense(getattr(layer, f"spherical_filter{which}_in"), attention + f"spherical_filter{which}_layer_1")
                dense(getattr(layer, f"spherical_filter{which}_out"),
                      attention + f"spherical_filter{which}_layer_2")
            put(layer.query1, get(attention + "Wq1"))
            put(layer.key1, get(attention + "Wk1"))
            put(layer.value1, get(attention + "Wv1"))
            put(layer.query2, get(attention + "Wq2"))
            put(layer.key2, get(attention + "Wk2"))
            put(layer.norm1_scale, get(prefix + "layer_normalization_1/scale"))
            put(layer.norm1_bias, get(prefix + "layer_normalization_1/bias"))
            dense(layer.residual_in, prefix + "res_mlp_1_layer_1")
            dense(layer.residual_out, prefix + "res_mlp_1_layer_2")
            dense(layer.exchange, prefix + "exchange_block/mlp_layer_2")
            put(layer.norm2_scale, get(prefix + "layer_normalization_2/scale"))
            put(layer.norm2_bias, get(prefix + "layer_normalization_2/bias"))
        dense(self.energy_hidden, "observables_0/energy_dense_regression")
        dense(self.energy_out, "observables_0/energy_dense_final")
        put(self.atomic_scales, get("observables_0/atomic_scales"))
        put(self.atomic_offsets, get("observables_0/energy_offset"))
        charges = "observables_0/electrostatic_energy/partial_charges/"
        dense(self.charge_hidden, charges + "charge_dense_regression_vec")
        dense(self.charge_out, charges + "charge_dense_final_vec")
        put(self.charge_offsets, get(charges + "Embed_0/embedding").reshape(-1))
        dense(self.hirshfeld_hidden, "observables_2/hirshfeld_ratios_dense_regression")
        dense(self.hirshfeld_out, "observables_2/hirshfeld_ratios_dense_final")
        put(self.hirshfeld_offsets, get("observables_2/Embed_0/embedding").reshape(-1))
        put(self.hirshfeld_weights, get("observables_2/Embed_1/embedding"))
        used.update(k for k in params.files if k.startswith("params/observables_0/zbl_repulsion/"))
        missing = [name for name, p in self.named_parameters() if id(p) not in assigned]
        unused = sorted(set(params.files) - used)
        if missing or unused:
            raise ValueError(f"SO3LR parameter file does not match the model: parameters not loaded {missing}, "
                             f"arrays not used {unused}")

    def _check_inputs(self, atomic_numbers: Tensor, positions: Tensor, batch: Optional[Tensor]) -> None:
        if atomic_numbers.dim() != 1 or positions.dim() != 2 or positions.shape[1] != 3 \
                or positions.shape[0] != atomic_numbers.shape[0]:
            raise ValueError("SO3LR expects atomic_numbers [N] and positions [N, 3], got "
                             + str(list(atomic_numbers.shape)) + " and " + str(list(positions.shape)))
        if atomic_numbers.shape[0] == 0:
            raise ValueError("SO3LR needs at least one atom")
        table_size = self.element_supported.shape[0]
        in_table = (atomic_numbers >= 0) & (atomic_numbers < table_size)
        known = in_table & self.element_supported.index_select(0, atomic_numbers.clamp(0, table_size - 1))
        if not bool(known.all()):
            bad: List[int] = torch.unique(atomic_numbers[~known]).tolist()
            names = ", ".join([describe_element(z, self._symbols) for z in bad])
            allowed = ", ".join([self._symbols[z] for z in self.supported_elements])
            noun = "element " if len(bad) == 1 else "elements "
            raise ValueError("SO3LR has no parameters for " + noun + names + "; supported: " + allowed
                             + ". Remove these atoms from the ML region (e.g. treat ions with a force field).")
        if batch is not None and batch.shape != atomic_numbers.shape:
            raise ValueError("batch must have shape [N] = " + str(list(atomic_numbers.shape)) + ", got "
                             + str(list(batch.shape)))

    def forward(self, atomic_numbers: Tensor, positions: Tensor, box: Optional[Tensor] = None,
                batch: Optional[Tensor] = None, total_charge: Optional[Tensor] = None) -> Dict[str, Tensor]:
        self._check_inputs(atomic_numbers, positions, batch)
        dtype = self.atomic_scales.dtype
        device = positions.device
        positions = positions.to(dtype)
        if box is not None:
            box = box.to(dtype)
        n_atoms = positions.shape[0]
        if batch is None:
            graph = torch.zeros(n_atoms, dtype=torch.long, device=device)
            num_graphs = 1
        else:
            graph = batch
            num_graphs = int(batch[-1]) + 1
        if total_charge is None:
            charge = torch.zeros(num_graphs, dtype=dtype, device=device)
        else:
            charge = total_charge.to(dtype).reshape(-1)
            if charge.shape[0] != num_graphs:
                raise ValueError("total_charge must have one entry per structure (" + str(num_graphs)
                                 + "), got " + str(charge.shape[0]))

        _, receivers, senders, _, edge_vectors = neighbor_list(positions, self.sr_cutoff, box, batch)
        x = self.network(atomic_numbers, edge_vectors, receivers, senders, charge, graph, num_graphs)

        atomic_energy = (self.energy_out(F.silu(self.energy_hidden(x))).squeeze(-1)
                         * self.atomic_scales.index_select(0, atomic_numbers)
                         + self.atomic_offsets.index_select(0, atomic_numbers))
        energy_nn = sum_per_structure(atomic_energy, graph, num_graphs)

        raw_charges = (self.charge_out(F.silu(self.charge_hidden(x))).squeeze(-1)
                       + self.charge_offsets.index_select(0, atomic_numbers))
        counts = torch.bincount(graph, minlength=num_graphs).to(dtype)
        raw_total = torch.zeros(num_graphs, dtype=dtype, device=device).index_add_(0, graph, raw_charges)
        charges = raw_charges + ((charge - raw_total) / counts).index_select(0, graph)

        kappa = self.hirshfeld_out(F.silu(self.hirshfeld_hidden(x)))
        hirshfeld = torch.abs(self.hirshfeld_offsets.index_select(0, atomic_numbers)
                              + (self.hirshfeld_weights.index_select(0, atomic_numbers) * kappa).sum(-1) / 8.0)

        distances_sr = torch.linalg.vector_norm(edge_vectors, dim=-1)
        energy_zbl = self.zbl(atomic_numbers, distances_sr, receivers, senders, graph.index_select(0, receivers),
                              num_graphs)

        lr = self.lr_cutoff
        # The op implements the kernels of Electrostatics (shifted force) and of SwitchedErfCoulomb (the PME
        # hand-off of viskrates.openmm.pme), which name theirs in long_range_kernel; any other electrostatics
        # module takes the generic path. hasattr is resolved when the model is scripted, so the branch is then
        # not compiled at all.
        if hasattr(self.electrostatics, "long_range_kernel") and self.network.backend == "fused" and lr is not None:
            # One pass per atom over the long-range neighbour list (viskrates::long_range_energy): no per-pair
            # tensors and a C++ backward, instead of ~30 elementwise ops on millions of pairs.
            # The op forms the edge vectors from the positions and differentiates them itself.
            row_ptr, _, senders_lr, shifts_lr, _ = neighbor_list(positions.detach(), lr, box, batch)
            alpha, c6 = self.dispersion.atomic_parameters(atomic_numbers, hirshfeld)
            atom_elec, atom_disp = long_range_energy(
                positions, box, row_ptr, senders_lr, shifts_lr, charges, alpha, c6, lr,
                self.electrostatics.coulomb_constant,
                self.electrostatics.sigma, self.electrostatics.switch_on, self.dispersion.switch_on,
                self.dispersion.scale, self.electrostatics.long_range_kernel)
            energy_elec = sum_per_structure(atom_elec, graph, num_graphs)
            energy_disp = sum_per_structure(atom_disp, graph, num_graphs)
        else:
            first, second, pair_vectors = self._long_range_pairs(positions, box, batch)
            distances_lr = torch.linalg.vector_norm(pair_vectors, dim=-1)
            pair_graph = graph.index_select(0, first)
            energy_elec = self.electrostatics(charges, distances_lr, first, second, pair_graph, num_graphs)
            energy_disp = self.dispersion(atomic_numbers, hirshfeld, distances_lr, first, second, pair_graph,
                                          num_graphs)

        dipole = torch.zeros(num_graphs, 3, dtype=dtype, device=device).index_add_(
            0, graph, charges.unsqueeze(-1) * positions)
        return {
            "energy": energy_nn + energy_zbl + energy_elec + energy_disp,
            "energy_so3krates": energy_nn,
            "energy_zbl": energy_zbl,
            "energy_elec": energy_elec,
            "energy_disp": energy_disp,
            "partial_charges": charges,
            "hirshfeld_ratios": hirshfeld,
            "dipole": dipole,
        }

    def _long_range_pairs(self, positions: Tensor, box: Optional[Tensor], batch: Optional[Tensor]):
        """Unordered long-range pairs ``(first [P], second [P], vectors [P, 3])``, each pair once (first < second)."""
        lr = self.lr_cutoff
        if lr is None:
            if box is not None:
                raise ValueError("SO3LR with lr_cutoff=None sums over all pairs and supports open boundaries "
                                 "only; give a finite lr_cutoff (e.g. 12 Å) for a periodic box")
            n_atoms = positions.shape[0]
            pairs = torch.triu_indices(n_atoms, n_atoms, 1, device=positions.device)
            first = pairs[0]
            second = pairs[1]
            if batch is not None:
                same = batch.index_select(0, first) == batch.index_select(0, second)
                first = first[same]
                second = second[same]
            return first, second, positions.index_select(0, second) - positions.index_select(0, first)
        # Pair vectors are rebuilt from the shifts so that the backward pass scatters over the kept half of
        # the directed list only.
        _, receivers, senders, shifts, _ = neighbor_list(positions.detach(), lr, box, batch)
        once = receivers < senders
        first = receivers[once]
        second = senders[once]
        vectors = positions.index_select(0, second) - positions.index_select(0, first)
        if box is not None:
            vectors = vectors + shifts[once] @ box
        return first, second, vectors
