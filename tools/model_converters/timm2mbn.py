"""Convert a timm MobileNet ImageNet checkpoint into an mbn_backbones backbone
checkpoint. Run with --help for the options."""
import sys

from mbn_backbones.converters import cli_main

if __name__ == '__main__':
    sys.exit(cli_main('timm'))
