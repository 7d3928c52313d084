"""`python -m cli`: the same as `adalora-svc`."""

import sys

from cli.main import main

sys.exit(main())
