import sys

from camtrap.cli import main

sys.exit(main())
