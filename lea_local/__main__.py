import sys

from lea_local.cli import main

sys.exit(main())
