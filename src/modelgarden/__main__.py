"""``python -m modelgarden`` runs the ``garden`` command."""

from modelgarden.cli import main

main()
