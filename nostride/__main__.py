import sys

from nostride.cli import main

sys.exit(main())
