import sys

from logitlab.cli import main

sys.exit(main())
