"""Time SO3LR and ViSNet energy + forces, fused kernels vs PyTorch reference, on periodic water boxes.

The same as ``viskrates bench`` (see ``viskrates.bench`` for what is measured and how); for example
``python examples/bench.py --models visnet --sizes 1000 3000 --threads 2 --repeats 5``.
"""
import argparse
import sys

from viskrates import bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_arguments(parser)
    sys.exit(bench.run_from_arguments(parser.parse_args()))
