from bench.figures import FIGURES
from bench.harness.run import main

raise SystemExit(main(FIGURES))
