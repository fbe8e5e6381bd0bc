"""`python -m searc ARGS` is `searc ARGS`; `accelerate launch -m searc train ...` trains in every process."""

import sys

from searc.cli import main

sys.exit(main())
