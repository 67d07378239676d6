"""`python -m tfslim.cli`: the `tfslim` command."""

import sys

from tfslim.cli import console_main

sys.exit(console_main())
