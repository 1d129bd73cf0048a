import sys

from maezoo.cli import main

sys.exit(main())
