"""Convert torchvision's trained ssdlite320_mobilenet_v3_large or
lraspp_mobilenet_v3_large into an mmdet/mmseg checkpoint of our models. Run
with --help for the options."""
import sys

from mbn_backbones.torchvision_models import cli_main

if __name__ == '__main__':
    sys.exit(cli_main())
