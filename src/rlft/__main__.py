import sys

from rlft.cli.main import main

sys.exit(main())
