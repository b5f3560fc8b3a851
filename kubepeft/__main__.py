import sys

from kubepeft.cli import main

sys.exit(main())
