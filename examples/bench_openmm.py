"""Time SO3LR molecular dynamics inside OpenMM: TorchForce vs PythonForce, ns/day and the cost split per step.

The same as ``viskrates bench --openmm`` (see ``viskrates.bench_openmm`` for the systems and what is measured);
for example ``python examples/bench_openmm.py --systems alanine-dipeptide chignolin --threads 2``.
"""
import argparse
import sys

from viskrates import bench_openmm

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenMM threads (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed model calls of the cost split "
                        "(default: %(default)s)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="(default: %(default)s)")
    bench_openmm.add_arguments(parser)
    sys.exit(bench_openmm.run_from_arguments(parser.parse_args()))
