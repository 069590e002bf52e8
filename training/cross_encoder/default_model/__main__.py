"""`python -m training.cross_encoder.default_model`: see `build.main`."""

import sys

from training.cross_encoder.default_model.build import main

sys.exit(main())
