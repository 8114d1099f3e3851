"""Convert a TFLite MobileNet ImageNet classifier (Google's V1/V2/V3, float or
quantized) into mbn_backbones backbone and classifier checkpoints. Run with
--help for the options."""
import sys

from mbn_backbones.tflite import main

if __name__ == '__main__':
    sys.exit(main())
