import sys

from .cli import main

# Guarded: the engine's processes start from a server that imports the main module.
if __name__ == "__main__":
    sys.exit(main())
