"""``python -m olive_flows`` is the same as the ``olive-flows`` command."""

import sys

from olive_flows.cli.main import main

sys.exit(main())
