import sys

from .cli.runner import main

sys.exit(main())
