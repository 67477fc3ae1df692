import sys

from colt_ray.cli import main

sys.exit(main())
