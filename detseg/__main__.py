"""``python -m detseg`` runs the command line, exactly like the ``detseg`` script."""

from detseg.cli.main import main

if __name__ == "__main__":
    main()
