"""Command line: ``viskrates simulate STRUCTURE.pdb``, ``viskrates bench``, ``viskrates train CONFIG.yaml``,
``viskrates export CHECKPOINT -o model.pt``."""
import argparse
import dataclasses
import sys
from typing import List, Optional


def _simulate(args: argparse.Namespace) -> int:
    from .simulate import SimulationSettings, run_simulation

    settings = SimulationSettings(
        structure=args.structure, output_dir=args.output, model=args.model, ml_region=args.ml_region,
        fix=not args.no_fix, ph=args.ph, padding_nm=args.padding, ionic_strength_molar=args.ionic_strength,
        temperature_k=args.temperature, timestep_fs=args.timestep, minimize_iterations=args.minimize_iterations,
        equilibration_steps=args.equilibration_steps, steps=args.steps, report_interval=args.report_interval,
        precision=args.precision, model_backend=args.model_backend, platform=args.platform, seed=args.seed,
        progress=not args.no_progress,
        membrane=args.membrane, membrane_center_z_nm=args.membrane_center_z, membrane_barostat=not args.no_barostat,
        hydrogen_mass_amu=args.hmr, lr_cutoff_angstrom=args.lr_cutoff)
    summary = run_simulation(settings)
    print(f"atoms: {summary['n_atoms']} (ML region: {summary['n_ml_atoms']}), time step {summary['timestep_fs']} fs")
    print(f"speed: {summary['ns_per_day']:.3f} ns/day")
    print(f"total energy: {summary['total_energy_mean']:.2f} ± {summary['total_energy_std']:.2f} kJ/mol")
    print(f"temperature: {summary['temperature_mean']:.1f} ± {summary['temperature_std']:.1f} K")
    for name, path in summary["outputs"].items():
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .simulate import SimulationSettings

    defaults = {f.name: f.default for f in dataclasses.fields(SimulationSettings)}
    parser = argparse.ArgumentParser(prog="viskrates", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    sim = commands.add_parser("simulate", help="ML/MM molecular dynamics of a PDB protein in water")
    sim.add_argument("structure", nargs="?", default=None,
                     help="PDB or PDBx/mmCIF file of the protein (optional with --membrane: a pure bilayer)")
    sim.add_argument("-o", "--output", default=defaults["output_dir"], help="output directory (default: %(default)s)")
    sim.add_argument("--model", default="so3lr", choices=["so3lr"], help="ML potential (default: %(default)s)")
    sim.add_argument("--ml-region", default="protein",
                     help="'protein' (default), 'all' (every atom, water included) or residue ids like '1-5,8'")
    sim.add_argument("--no-fix", action="store_true", help="use the structure as is (it must have hydrogens)")
    sim.add_argument("--ph", type=float, default=defaults["ph"], help="pH for adding hydrogens (default: %(default)s)")
    sim.add_argument("--padding", type=float, default=defaults["padding_nm"], help="water padding in nm (default: %(default)s)")
    sim.add_argument("--ionic-strength", type=float, default=defaults["ionic_strength_molar"], help="salt in mol/L (default: neutralise only)")
    sim.add_argument("--temperature", type=float, default=defaults["temperature_k"], help="K (default: %(default)s)")
    sim.add_argument("--timestep", type=float, default=None,
                     help="fs (default: 1 with mechanical embedding, 0.5 with --ml-region all)")
    sim.add_argument("--minimize-iterations", type=int, default=defaults["minimize_iterations"], help="(default: %(default)s)")
    sim.add_argument("--equilibration-steps", type=int, default=defaults["equilibration_steps"], help="(default: %(default)s)")
    sim.add_argument("--steps", type=int, default=defaults["steps"], help="production steps (default: %(default)s)")
    sim.add_argument("--report-interval", type=int, default=defaults["report_interval"], help="steps between frames (default: %(default)s)")
    sim.add_argument("--precision", default="single", choices=["single", "double"], help="ML model precision")
    sim.add_argument("--model-backend", default=defaults["model_backend"], choices=["fused", "reference"],
                     help="kernels of the ML model: the viskrates ops or pure PyTorch, same forces up to rounding "
                          "(default: %(default)s)")
    sim.add_argument("--platform", default=defaults["platform"], help="OpenMM platform (default: %(default)s)")
    sim.add_argument("--seed", type=int, default=defaults["seed"], help="random seed (default: %(default)s)")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")
    sim.add_argument("--membrane", nargs="?", const="POPC", default=None, metavar="LIPID|PATCH.pdb",
                     help="embed the protein in a lipid bilayer (OpenMM's Modeller.addMembrane, amber14 lipid17) "
                          "instead of a water box: POPC (the default), POPE, DLPC, DLPE, DMPC, DOPC, DPPC or a "
                          "solvated patch file; without a structure, run the pure patch")
    sim.add_argument("--membrane-center-z", type=float, default=None,
                     help="z of the bilayer centre in nm (default: the protein's centre; 0 for OPM structures)")
    sim.add_argument("--no-barostat", action="store_true",
                     help="membranes: no MonteCarloMembraneBarostat (default: 1 bar, no surface tension)")
    sim.add_argument("--lr-cutoff", type=float, default=defaults["lr_cutoff_angstrom"],
                     help="SO3LR long-range cutoff in Å; periodic boxes must be twice as wide (default: %(default)s)")
    sim.add_argument("--hmr", nargs="?", type=float, const=1.5, default=None, metavar="MASS",
                     help="hydrogen mass repartitioning to MASS amu (default 1.5) and a 1.5 fs time step")
    sim.set_defaults(run=_simulate)

    from . import bench as bench_module

    bench = commands.add_parser("bench", help="time energy + forces, fused kernels vs PyTorch reference",
                                description=bench_module.__doc__.splitlines()[0])
    bench_module.add_arguments(bench)
    bench.set_defaults(run=bench_module.run_from_arguments)
    _add_train_commands(commands)
    return parser


def _train(args: argparse.Namespace) -> int:
    from .train import Trainer, load_config

    import torch.distributed as dist

    trainer = Trainer(load_config(args.config), resume=args.resume)
    metrics = trainer.fit()
    if dist.is_available() and dist.is_initialized():  # started by torchrun: leave the group cleanly
        dist.destroy_process_group()
    if trainer.rank == 0:
        print(f"epoch {trainer.epoch}: validation energy MAE {metrics['val_energy_mae_meV']:.2f} meV, "
              f"force MAE {metrics['val_forces_mae_meV_per_A']:.2f} meV/Å (EMA weights)")
        print(f"wrote {trainer.config.training.output_dir}/{{checkpoint_best.pt,checkpoint_last.pt,metrics.csv}}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .train import export_checkpoint

    metadata = export_checkpoint(args.checkpoint, args.output, use_ema=not args.no_ema, backend=args.backend)
    print(f"wrote {args.output}: {metadata['model']['name']}, elements {metadata['elements']}, "
          f"cutoff {metadata['cutoff']} Å, data sha256 {metadata['training_data_sha256'][:12]}…")
    return 0


def _add_train_commands(commands) -> None:
    train = commands.add_parser("train", help="train or fine-tune a model from a YAML config")
    train.add_argument("config", help="YAML config (see examples/train_visnet_rmd17.yaml)")
    train.add_argument("--resume", default=None, help="continue from a checkpoint (checkpoint_last.pt)")
    train.set_defaults(run=_train)
    export = commands.add_parser("export", help="write a training checkpoint as TorchScript with metadata")
    export.add_argument("checkpoint", help="checkpoint_best.pt or checkpoint_last.pt of a training run")
    export.add_argument("-o", "--output", required=True, help="TorchScript file to write (e.g. model.pt)")
    export.add_argument("--no-ema", action="store_true", help="export the live weights instead of their EMA")
    export.add_argument("--backend", default="fused", choices=["fused", "reference"],
                        help="kernels of the exported model: 'fused' (default, the viskrates kernels) or "
                             "'reference' (the PyTorch ones training used; same numbers up to rounding)")
    export.set_defaults(run=_export)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``viskrates`` command; bad input exits with status 2 and a one-line message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"viskrates {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
