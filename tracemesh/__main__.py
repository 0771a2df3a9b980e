import sys

from tracemesh.cli import main

sys.exit(main())
