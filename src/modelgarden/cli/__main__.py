"""``python -m modelgarden.cli`` runs the ``garden`` command."""

from modelgarden.cli.main import main

main()
