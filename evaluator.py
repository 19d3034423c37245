#!/usr/bin/env python
"""Entry point: ``python evaluator.py [--help]`` (also ``./medgpt.sh eval``). The code is the ``evaluator``
package; Python imports the package, not this file, for ``import evaluator``."""

import sys

from evaluator.cli import main

if __name__ == "__main__":
    sys.exit(main())
