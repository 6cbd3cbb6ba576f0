import sys

from recmaml.cli import main

sys.exit(main())
