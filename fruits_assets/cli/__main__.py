"""`python -m fruits_assets.cli`: the `fruits` command."""

import sys

from fruits_assets.cli.main import main

sys.exit(main())
