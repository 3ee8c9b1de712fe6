"""``python -m seesr.cli`` (and ``accelerate launch -m seesr.cli``): the ``seesr`` command."""

from seesr.cli import main

raise SystemExit(main())
