"""The original DS2 attack script's command line, running asr-recon's attack (see cli.seed_script_main)."""

import sys

from cli import seed_script_main

sys.exit(seed_script_main("ds2"))
